//! How many tokio worker threads a mesh peer process (`coder`,
//! `coder-agent`) runs.
//!
//! quinn serializes one connection's work behind one lock: the endpoint
//! driver, the connection driver and a stream's reader take turns. Spread
//! over two worker threads, they hand every batch of packets across threads
//! and wake each other. On a machine with two cores or fewer, which the peer
//! shares with the programs whose bytes it carries, that costs more than the
//! second thread gains: with both ends of `coder tunnel --tcp` on a 2-core
//! machine, one worker per process took 2.47 core-seconds per GiB and two
//! took 2.76, and the tunnel ran 15 % faster (`bench cli`). With more cores,
//! connections to several peers still spread over several threads.

/// Worker threads for a peer process: `requested` if set, else one on a
/// machine with two cores or fewer, else `many`.
pub fn worker_threads(requested: Option<usize>, many: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    worker_threads_on(cores, requested, many)
}

fn worker_threads_on(cores: usize, requested: Option<usize>, many: usize) -> usize {
    match requested {
        Some(n) => n.max(1),
        None if cores <= 2 => 1,
        None => many.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_on_small_machines_unless_asked() {
        assert_eq!(worker_threads_on(1, None, 2), 1);
        assert_eq!(worker_threads_on(2, None, 2), 1);
        assert_eq!(worker_threads_on(4, None, 2), 2);
        assert_eq!(worker_threads_on(16, None, 16), 16);
        assert_eq!(worker_threads_on(2, Some(3), 2), 3);
        assert_eq!(worker_threads_on(8, Some(0), 8), 1, "zero workers would never run a task");
    }
}

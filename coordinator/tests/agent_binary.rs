//! `GET /bin/coder-agent-<os>-<arch>` (unauthenticated) streams the agent
//! binary: byte-identical, with its length and an ETag, and without ever
//! holding the whole file in memory. This binary has one test, so the
//! allocation tracker below sees only its allocations.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use coordinator::testutil::TestServer;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The system allocator, remembering the largest single allocation.
struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

const SIZE: u64 = 64 << 20;

fn own_name() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armv7",
        other => other,
    };
    format!("coder-agent-{}-{arch}", std::env::consts::OS)
}

/// SHA-256 of a file, read in small pieces.
fn file_digest(path: &std::path::Path) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hash.finalize().to_vec();
        }
        hash.update(&buf[..n]);
    }
}

#[tokio::test]
async fn a_large_agent_binary_streams_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coder-agent");
    {
        // Sparse, with data at both ends and in the middle.
        let mut file = std::fs::File::create(&path).unwrap();
        file.set_len(SIZE).unwrap();
        for (offset, bytes) in
            [(0, &b"\x7fELF"[..]), (SIZE / 2 + 3, b"middle"), (SIZE - 4, b"end!")]
        {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(bytes).unwrap();
        }
    }
    let expected = file_digest(&path);
    let configured = path.clone();
    let srv = TestServer::start_with(move |c| c.agent_binary = Some(configured)).await.unwrap();
    let url = srv.url.join(&format!("/bin/{}", own_name())).unwrap();
    let http = reqwest::Client::new();

    LARGEST.store(0, Ordering::Relaxed);
    let resp = http.get(url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(SIZE));
    let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        hash.update(&chunk);
    }
    assert_eq!(total, SIZE);
    assert_eq!(hash.finalize().to_vec(), expected, "the download differs from the file");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < 4 << 20,
        "serving a {SIZE}-byte binary allocated {largest} bytes at once: it is not streamed"
    );

    // A script that has this binary already skips the download.
    let etag = etag.expect("no ETag");
    let resp = http.get(url.clone()).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(resp.status(), 304);
    let resp = http.get(url).header("if-none-match", "W/\"other\"").send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Other names are still 404.
    let other = srv.url.join("/bin/coder-agent-plan9-mips").unwrap();
    assert_eq!(http.get(other).send().await.unwrap().status(), 404);
}

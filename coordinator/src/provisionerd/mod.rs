//! The provisioner worker's core: safe template extraction, running
//! terraform, and reading agents, apps and parameters from plans and state.

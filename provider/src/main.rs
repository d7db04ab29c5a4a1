//! `terraform-provider-coder`: started by terraform, never by hand. See the `provider`
//! library for what it serves and how to install it.

use anyhow::Context as _;

/// Set by terraform (go-plugin) in the environment of every provider it starts.
const MAGIC_COOKIE_ENV: &str = "TF_PLUGIN_MAGIC_COOKIE";

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("terraform-provider-coder {}", provider::PROVIDER_VERSION);
        return Ok(());
    }
    if std::env::var_os(MAGIC_COOKIE_ENV).is_none() {
        eprintln!(
            "This binary is a Terraform plugin and is not meant to be run directly.\n\
             Install it with a CLI configuration (see provider/README.md) and run terraform."
        );
        std::process::exit(1);
    }
    // Diagnostics capture a backtrace whenever RUST_BACKTRACE is set, which would print
    // the provider's stack under every validation error a template author sees.
    // Panics still honour RUST_BACKTRACE. Set before any thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(provider::serve())
        .context("serving the coder provider")
}

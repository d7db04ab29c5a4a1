//! The Terraform plugin protocol's generated Rust code is kept in the
//! repository (`third_party/tf-provider/src/generated/`), so building the
//! provider needs no `protoc`. This test regenerates it from the `.proto`
//! files with the `protoc` that `protoc-bin-vendored` ships and fails if the
//! committed code differs. `UPDATE_GENERATED=1` rewrites it instead.

use std::path::{Path, PathBuf};

fn vendored_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../third_party/tf-provider")
}

#[test]
fn generated_protocol_code_is_current() -> anyhow::Result<()> {
    let root = vendored_crate();
    let committed = root.join("src/generated");
    let out = tempfile::tempdir()?;
    let mut config = tonic_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The same settings as the upstream crate's build script.
    tonic_build::configure()
        .protoc_arg("--experimental_allow_proto3_optional")
        .build_client(false)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_protos_with_config(
            config,
            &[root.join("proto/plugin.proto"), root.join("proto/tfplugin6.5.proto")],
            &[root.join("proto")],
        )?;
    let update = std::env::var_os("UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for name in ["plugin.rs", "tfplugin6.rs"] {
        let fresh = std::fs::read_to_string(out.path().join(name))?;
        let path = committed.join(name);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if fresh != old {
            if update {
                std::fs::create_dir_all(&committed)?;
                std::fs::write(&path, &fresh)?;
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated code is out of date: {stale:?}; run \
         `UPDATE_GENERATED=1 cargo test -p provider --test proto_generated` and commit it"
    );
    Ok(())
}

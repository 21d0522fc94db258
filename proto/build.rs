//! Generates the tonic/prost code with protox (pure Rust): no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/keyquorum/v1/kms.proto",
        "proto/keyquorum/v1/admin.proto",
        "proto/keyquorum/internal/v1/internal.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    // The internal API reuses public messages (a member's status), which live in `crate::v1`:
    // it is generated first with that path extern, then the public API (whose output file
    // replaces the partial one the first pass wrote for `keyquorum.v1`).
    let internal = protox::compile(&files[2..], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".keyquorum.v1", "crate::v1")
        .compile_fds(internal)?;
    let public = protox::compile(&files[..2], ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(public)?;
    Ok(())
}

//! Compiles the .proto files with protox (pure Rust, no system protoc) and feeds tonic's codegen.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/mesh/types.proto",
        "proto/mesh/discovery.proto",
        "proto/mesh/identity.proto",
        "proto/mesh/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // JSON/YAML output in mesh-cli and the sidecar's config dump use the wire types directly.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .type_attribute(
            ".mesh.types.v1.Resource.kind",
            "#[serde(rename_all = \"snake_case\")]",
        )
        .type_attribute(
            ".mesh.types.v1.HashOn.key",
            "#[serde(rename_all = \"snake_case\")]",
        )
        .compile_fds(fds)?;
    Ok(())
}

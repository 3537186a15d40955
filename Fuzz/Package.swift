// swift-tools-version:5.10
// libFuzzer targets for Eosin's file readers. Built by `make fuzz` with
// -sanitize=fuzzer,address applied to every module; not part of the main build.
import PackageDescription

let package = Package(
  name: "EosinFuzz",
  dependencies: [.package(name: "Eosin", path: "..")],
  targets: [
    // GGUF reader, LLaMA-family loader and GGUF tokenizer.
    .executableTarget(name: "FuzzGGUF", dependencies: [.product(name: "EosinEngine", package: "Eosin")])
  ]
)

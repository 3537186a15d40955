// swift-tools-version:5.10
// libFuzzer targets for Eosin's file readers. Built by `make fuzz` with
// -sanitize=fuzzer,address applied to every module; not part of the main build.
import PackageDescription

let package = Package(
  name: "EosinFuzz",
  dependencies: [.package(name: "Eosin", path: "..")],
  targets: [
    .target(name: "FuzzDriver"),
    // GGUF reader, LLaMA-family loader and GGUF tokenizer.
    .executableTarget(name: "FuzzGGUF", dependencies: [.product(name: "EosinEngine", package: "Eosin")]),
    // safetensors reader.
    .executableTarget(name: "FuzzSafeTensors", dependencies: ["FuzzDriver", .product(name: "EosinEngine", package: "Eosin")]),
    // Vocabulary, merges and tokenizer.json loading, then encoding and decoding.
    .executableTarget(name: "FuzzTokenizer", dependencies: ["FuzzDriver", .product(name: "EosinEngine", package: "Eosin")]),
    // Prompt sets, report templates, report manifests, weights manifests.
    .executableTarget(name: "FuzzDocuments", dependencies: ["FuzzDriver", .product(name: "EosinEngine", package: "Eosin")]),
    // PyTorch archives (.bin): zip directory, restricted unpickler, storage bounds.
    .executableTarget(name: "FuzzTorch", dependencies: ["FuzzDriver", .product(name: "EosinEngine", package: "Eosin")]),
    // PNG, JPEG and TIFF decoders.
    .executableTarget(name: "FuzzImage", dependencies: ["FuzzDriver", .product(name: "EosinEngine", package: "Eosin")]),
  ]
)

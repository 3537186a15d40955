// swift-tools-version:5.10
// Eosin: conversational pathology on an ordinary CPU.
// Layering follows DESIGN.md: C shims -> Tensor -> Weights -> Models; Tokenizer (Foundation only);
// Slide (image/slide C shims only); CLI on top.
import PackageDescription

// The engine's hand-written SIMD kernels (decode GEMV, resampling) need the build machine's
// vector width; without this, Swift targets generic x86-64 (SSE2). Eosin builds from source on
// the machine that runs it, so native is the right target.
let native: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "native"])]

let package = Package(
  name: "Eosin",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "eosin", targets: ["eosin"]),
    // The engine as a library, for the libFuzzer targets in Fuzz/ (a package of its own).
    .library(name: "EosinEngine", targets: ["EosinWeights", "EosinModels", "EosinTokenizer", "EosinSlide", "EosinPipelines"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
  ],
  targets: [
    // System-library shims: a module map and a header each.
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "COpenSlide", pkgConfig: "openslide", providers: [.apt(["libopenslide-dev"])]),
    .systemLibrary(name: "CReadline", pkgConfig: "readline", providers: [.apt(["libreadline-dev"])]),
    .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
    .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    // OpenSSL's libcrypto for SHA-256 (weights are verified against their manifest on load).
    .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
    // HDF5 (Debian's serial build) for `eosin embed`'s feature files; the shim below holds the C.
    .systemLibrary(name: "CHDF5Sys", pkgConfig: "hdf5", providers: [.apt(["libhdf5-dev"])]),
    .target(name: "CHDF5", dependencies: ["CHDF5Sys"]),
    // libjpeg reports errors by longjmp and libtiff's setters are variadic; neither can be called
    // safely from Swift, so these two shims carry a few lines of C each.
    .target(name: "CJPEG", linkerSettings: [.linkedLibrary("jpeg")]),
    .target(
      name: "CTIFF",
      linkerSettings: [.linkedLibrary("tiff")]),

    // Eosin's quantised-weight kernels (AVX-512 with a portable fallback) and CPU-affinity query.
    .target(name: "CQuant", cSettings: [.unsafeFlags(["-O3", "-march=native"])]),
    // Optimised in debug builds too: the test suite runs real models through these kernels, and
    // unoptimised SIMD code is about 50x slower.
    .target(
      name: "EosinTensor", dependencies: ["CBLAS", "CQuant"],
      swiftSettings: native + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
    .target(name: "EosinWeights", dependencies: ["EosinTensor", "CCrypto"]),
    .target(name: "EosinTokenizer", dependencies: ["CZlib"], swiftSettings: native),
    .target(name: "EosinModels", dependencies: ["EosinTensor", "EosinWeights"], swiftSettings: native),
    .target(
      name: "EosinTraining", dependencies: ["EosinModels", "EosinTokenizer", "EosinPipelines"], swiftSettings: native),
    .target(
      name: "EosinPipelines", dependencies: ["EosinModels", "EosinTokenizer", "EosinSlide", "CHDF5"], swiftSettings: native),
    .target(name: "EosinSlide", dependencies: ["COpenSlide", "CJPEG", "CPNG", "CTIFF"], swiftSettings: native),
    .executableTarget(
      name: "eosin",
      dependencies: [
        "EosinSlide", "EosinTensor", "EosinWeights", "EosinModels", "EosinTokenizer", "EosinTraining", "EosinPipelines",
        "CReadline",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),

    .target(name: "TestSupport", dependencies: ["EosinSlide", "EosinTraining", "CTIFF"], path: "Tests/TestSupport"),
    .testTarget(name: "EosinPipelinesTests", dependencies: ["EosinPipelines", "TestSupport"]),
    .testTarget(name: "EosinSlideTests", dependencies: ["EosinSlide", "TestSupport"]),
    .testTarget(name: "EosinTensorTests", dependencies: ["EosinTensor"]),
    .testTarget(name: "EosinWeightsTests", dependencies: ["EosinWeights", "TestSupport"], exclude: ["Fixtures"]),
    .testTarget(name: "EosinModelsTests", dependencies: ["EosinModels", "TestSupport"], exclude: ["Fixtures"]),
    .testTarget(name: "EosinTrainingTests", dependencies: ["EosinTraining", "TestSupport"]),
    .testTarget(name: "EosinTokenizerTests", dependencies: ["EosinTokenizer", "CZlib", "TestSupport"], exclude: ["Fixtures"]),
    .testTarget(name: "CLITests", dependencies: ["TestSupport", "eosin", "CHDF5"]),
  ]
)

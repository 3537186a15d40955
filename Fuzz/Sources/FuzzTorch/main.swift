import EosinTensor
import EosinWeights
import FuzzDriver

/// One fuzz input: a PyTorch archive (`pytorch_model.bin`). Open it (zip directory, restricted
/// unpickler, storage bounds); when that succeeds, read every tensor of up to 1M elements as f32.
/// Thrown errors are the expected outcome; a crash, an out-of-bounds access (AddressSanitizer)
/// or a runaway allocation is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTorch(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let p = scratchFile("pytorch_model.bin", UnsafeRawBufferPointer(start: data, count: size))
  guard let f = try? TorchArchive(path: p) else { return 0 }
  for (name, shape) in f.shapes where shape.reduce(1, *) <= 1 << 20 { _ = try? f.tensor(name, shape: nil) }
  return 0
}

@_cdecl("FuzzTorch_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runFuzzer(argc, argv, fuzzTorch)
}

import EosinTensor
import EosinWeights
import FuzzDriver

/// One fuzz input: a safetensors file. Parse it; when that succeeds, read every tensor as f32.
/// Thrown errors are the expected outcome; a crash, an out-of-bounds access (AddressSanitizer)
/// or a runaway allocation is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let p = scratchFile("in.safetensors", UnsafeRawBufferPointer(start: data, count: size))
  guard let f = try? SafeTensorsFile(path: p) else { return 0 }
  for (name, t) in f.tensors where t.shape.reduce(1, *) <= 1 << 20 { _ = try? f.tensor(name) }
  return 0
}

@_cdecl("FuzzSafeTensors_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runFuzzer(argc, argv, fuzzSafeTensors)
}

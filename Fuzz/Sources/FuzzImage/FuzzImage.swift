import EosinSlide
import FuzzDriver

/// One fuzz input: an image file (PNG, JPEG or TIFF, recognised by its magic bytes), decoded
/// through the same entry point as `eosin classify`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let p = scratchFile("in.img", UnsafeRawBufferPointer(start: data, count: size))
  if let img = try? ImageCodec.read(p) { _ = img.pixels.count }
  return 0
}

@_cdecl("FuzzImage_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runFuzzer(argc, argv, fuzzImage)
}

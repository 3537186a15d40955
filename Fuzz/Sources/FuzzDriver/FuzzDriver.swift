import Foundation

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
  _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
  _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

/// Hands a target's callback to libFuzzer's driver (SwiftPM links each executable's entry point
/// as `<Target>_main`, so libFuzzer's own `main` is not linked in).
public func runFuzzer(
  _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
  _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt {
  var c = argc
  var v = argv
  return LLVMFuzzerRunDriver(&c, &v, callback)
}

/// A scratch folder in memory (or /tmp) for readers that take paths, one per process.
public let fuzzScratch: String = {
  let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
  let d = "\(base)/eosin-fuzz-\(getpid())"
  try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
  return d
}()

/// Writes `bytes` to NAME in the scratch folder and returns its path.
public func scratchFile(_ name: String, _ bytes: UnsafeRawBufferPointer) -> String {
  let p = "\(fuzzScratch)/\(name)"
  FileManager.default.createFile(atPath: p, contents: Data(bytes))
  return p
}

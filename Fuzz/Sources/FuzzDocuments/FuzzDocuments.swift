import EosinPipelines
import Foundation
import FuzzDriver

/// One fuzz input: the first byte picks the reader, the rest is the file: a zero-shot prompt set
/// (JSON), a report template (JSON), a report manifest (CSV) or a weights manifest (JSON).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDocuments(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard size > 0 else { return 0 }
  let body = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
  switch data[0] % 4 {
  case 0:
    if let s = try? PromptSet.load(scratchFile("set.json", body)) { _ = s.allClasses.map(\.phrases) }
  case 1:
    _ = try? ReportTemplate.load(scratchFile("template.json", body), searchDirs: [])
  case 2:
    if let m = try? ReportManifest.load(scratchFile("manifest.csv", body)) { _ = ReportNaming.names(m.rows.map(\.path)) }
  default:
    if let m = try? WeightsManifest.load(scratchFile("manifest.json", body)) { _ = try? m.encoded() }
  }
  return 0
}

@_cdecl("FuzzDocuments_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  runFuzzer(argc, argv, fuzzDocuments)
}

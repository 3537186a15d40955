import EosinSlide
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// The bad-input corpus of the hardening issue, as one table: each case builds its input, runs
/// `eosin` under `ulimit -v` (8 GiB of address space, far below what the old failures tried to
/// allocate), and checks exit status 2, exactly one line on stderr that names the file, no crash,
/// nothing on stdout and no output file left behind.
final class BadInputCorpusTests: XCTestCase {
  static let dir = TestSupport.tempDir("eosin-corpus")
  static let bundle: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-corpus-bundle")) }()

  /// A copy of the tiny bundle, changed by `edit(clipFolder)`.
  func bundle(_ name: String, _ edit: (String) throws -> Void) throws -> String {
    let d = Self.dir + "/" + name
    try? FileManager.default.removeItem(atPath: d)
    try FileManager.default.copyItem(atPath: Self.bundle, toPath: d)
    try edit(d + "/clip")
    return d
  }

  /// Runs eosin with a memory limit; returns (status, stdout, stderr).
  func run(_ args: [String]) throws -> CLITests.Run {
    let quoted = ([CLITests.binary] + args).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
    return try CLITests.runShell("ulimit -v 8388608; exec " + quoted.joined(separator: " "))
  }

  func safetensors(_ header: String, data: [UInt8] = []) -> Data {
    var d = Data()
    var n = UInt64(header.utf8.count).littleEndian
    withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
    d.append(Data(header.utf8))
    d.append(contentsOf: data)
    return d
  }

  func testEveryBadInputIsOneLineExitTwo() throws {
    let d = Self.dir
    let img = d + "/ok.png"
    try ImageCodec.write(TestSupport.syntheticHE(width: 48, height: 48), to: img)
    let slide = try TestSupport.writeSyntheticSlide(at: d + "/ok.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    // Inputs.
    var hugeJPEG = try ImageCodec.encodeJPEG(TestSupport.syntheticHE(width: 64, height: 64))
    for i in 0..<(hugeJPEG.count - 8) where hugeJPEG[i] == 0xFF && hugeJPEG[i + 1] == 0xC0 {
      hugeJPEG[i + 5] = 0xB3
      hugeJPEG[i + 6] = 0xB0
      hugeJPEG[i + 7] = 0xB3
      hugeJPEG[i + 8] = 0xB0
      break
    }
    FileManager.default.createFile(atPath: d + "/huge.jpg", contents: Data(hugeJPEG))
    let good = try ImageCodec.encodeJPEG(TestSupport.syntheticHE(width: 96, height: 96))
    FileManager.default.createFile(atPath: d + "/truncated.jpg", contents: Data(good.prefix(good.count / 2)))
    try? FileManager.default.removeItem(atPath: d + "/loop-a.png")
    try? FileManager.default.removeItem(atPath: d + "/loop-b.png")
    try FileManager.default.createSymbolicLink(atPath: d + "/loop-a.png", withDestinationPath: d + "/loop-b.png")
    try FileManager.default.createSymbolicLink(atPath: d + "/loop-b.png", withDestinationPath: d + "/loop-a.png")
    try "slide\n".write(toFile: d + "/header-only.csv", atomically: true, encoding: .utf8)
    // Weights.
    let overflow = try bundle("overflow") { c in
      try self.safetensors(
        #"{"logit_scale":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0]
      )
      .write(to: URL(fileURLWithPath: c + "/model.safetensors"))
    }
    let bigID = try bundle("big-id") { c in
      try #"{"a": 3000000000, "b": 1}"#.write(toFile: c + "/vocab.json", atomically: true, encoding: .utf8)
    }
    let negative = try bundle("negative") { c in
      try #"{"a": -5, "b": -7}"#.write(toFile: c + "/vocab.json", atomically: true, encoding: .utf8)
    }
    let noConfig = try bundle("no-config") { c in try FileManager.default.removeItem(atPath: c + "/config.json") }
    let tampered = try bundle("tampered") { c in
      let p = c + "/model.safetensors"
      let size = try FileManager.default.attributesOfItem(atPath: p)[.size] as! Int
      let man = c + "/../manifest.json"
      var o = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: man))) as! [String: Any]
      o["files"] = ["clip/model.safetensors": ["sha256": try SHA256.hex(fileAt: p), "bytes": size]]
      try JSONSerialization.data(withJSONObject: o).write(to: URL(fileURLWithPath: man))
      var b = try Data(contentsOf: URL(fileURLWithPath: p))
      b[b.count / 2] ^= 0x01
      try b.write(to: URL(fileURLWithPath: p))
    }
    let longName = String(repeating: "x", count: 1 << 20)
    try #"{"name": "long", "classes": [{"name": "\#(longName)"}, {"name": "\#(longName)"}]}"#.write(
      toFile: d + "/long.json", atomically: true, encoding: .utf8)
    let heatFile = d + "/heat-is-a-file"
    FileManager.default.createFile(atPath: heatFile, contents: Data([1]))
    let w = Self.bundle
    // (case, arguments, text the one error line must contain, folder that must stay empty)
    let cases: [(String, [String], String, String?)] = [
      ("shape overflow", ["classify", "--classes", "a,b", "--weights", overflow, "--no-cache", img], "overflows", nil),
      (
        "vocabulary id beyond Int32", ["classify", "--classes", "a,b", "--weights", bigID, "--no-cache", img], "outside 0...", nil
      ),
      (
        "negative-only vocabulary", ["classify", "--classes", "a,b", "--weights", negative, "--no-cache", img], "outside 0...",
        nil
      ),
      ("missing clip/config.json", ["classify", "--classes", "a,b", "--weights", noConfig, img], "clip/config.json", nil),
      ("tampered weights", ["classify", "--classes", "a,b", "--weights", tampered, "--no-cache", img], "does not match", nil),
      ("JPEG declaring 46000x46000", ["classify", "--classes", "a,b", "--weights", w, d + "/huge.jpg"], "46000x46000", nil),
      ("truncated JPEG", ["classify", "--classes", "a,b", "--weights", w, d + "/truncated.jpg"], "truncated", nil),
      ("symlink loop", ["classify", "--classes", "a,b", "--weights", w, d + "/loop-a.png"], "leads nowhere", nil),
      ("1 MB class name", ["classify", "--prompts", d + "/long.json", "--weights", w, img], "more characters", nil),
      (
        "manifest with only a header",
        ["report", "--weights", w, "--template", "lung-biopsy", "--manifest", d + "/header-only.csv", "--out", d + "/r1"],
        "lists no slides", d + "/r1"
      ),
      (
        "heatmap folder is a file",
        ["classify", "--classes", "a,b", "--weights", w, "--heatmap", heatFile + "/sub", "--format", "json", slide],
        "cannot write", nil
      ),
    ]
    for (name, args, needle, outDir) in cases {
      let r = try run(args)
      XCTAssertEqual(r.status, 2, "\(name): \(r.stderr.prefix(300))")
      let lines = r.stderr.split(separator: "\n")
      XCTAssertEqual(lines.count, 1, "\(name): \(r.stderr.prefix(600))")
      XCTAssertTrue(lines.first?.hasPrefix("eosin: error: ") ?? false, "\(name): \(r.stderr.prefix(300))")
      XCTAssertTrue(r.stderr.contains(needle), "\(name): \(r.stderr.prefix(300))")
      XCTAssertLessThan(r.stderr.utf8.count, 1200, name)
      if name != "heatmap folder is a file" { XCTAssertTrue(r.stdout.isEmpty, "\(name): \(r.stdout.prefix(300))") }
      if let o = outDir {
        let left = (try? FileManager.default.contentsOfDirectory(atPath: o))?.filter { !$0.hasPrefix(".") } ?? []
        XCTAssertTrue(left.isEmpty, "\(name): left \(left)")
      }
    }
  }

  /// Weights whose manifest was updated to match a damaged `logit_scale` (NaN): every score is
  /// flagged `non-finite`, the JSON stays valid (null, never NaN), and eval does not crash.
  func testNaNWeightsAreFlaggedNotCrashed() throws {
    let b = try bundle("nan") { c in
      let p = c + "/model.safetensors"
      let f = try SafeTensorsFile(path: p)
      let off = f.dataStart + f.tensors["logit_scale"]!.begin
      var bytes = try Data(contentsOf: URL(fileURLWithPath: p))
      let nan = Float.nan.bitPattern.littleEndian
      withUnsafeBytes(of: nan) { for k in 0..<4 { bytes[off + k] = $0[k] } }
      try bytes.write(to: URL(fileURLWithPath: p))
    }
    let img = Self.dir + "/nan.png"
    try ImageCodec.write(TestSupport.syntheticHE(width: 48, height: 48), to: img)
    let r = try run(["classify", "--classes", "a,b", "--weights", b, "--no-cache", "--format", "json", img])
    XCTAssertEqual(r.status, 0, r.stderr)
    let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
    let res = (o["results"] as! [[String: Any]])[0]
    XCTAssertTrue((res["flags"] as! [[String: String]]).contains { $0["code"] == "non-finite" }, "\(res)")
    let tiles = Self.dir + "/nan-tiles"
    for cls in ["a", "b"] {
      try FileManager.default.createDirectory(atPath: tiles + "/" + cls, withIntermediateDirectories: true)
      try ImageCodec.write(TestSupport.syntheticHE(width: 48, height: 48), to: tiles + "/\(cls)/t.png")
    }
    let e = try run(["eval", "zero-shot", "--classes", "a,b", "--weights", b, "--no-cache", "--data", tiles])
    XCTAssertEqual(e.status, 2, e.stderr)
    XCTAssertTrue(e.stderr.contains("non-finite"), e.stderr)
  }
}

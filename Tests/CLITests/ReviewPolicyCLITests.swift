import EosinSlide
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// One analysed slide, one review policy: the same flags in every output, calibration in every
/// command, batch runs that survive bad inputs, and the REPL's quoting and records. Runs on a
/// tiny random bundle and inputs the tests write themselves.
final class ReviewPolicyCLITests: XCTestCase {
  static let bundle: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-review-bundle")) }()
  static let dir = TestSupport.tempDir("eosin-review")
  static let lung = TestSupport.projectRoot + "/Prompts/zero-shot/lung.json"

  func eosin(_ args: [String], stdin: String? = nil, cache: String? = nil) throws -> CLITests.Run {
    try CLITests.run(
      args + ["--weights", Self.bundle, "--cache", cache ?? (Self.dir + "/cache")], stdin: stdin,
      env: ["XDG_STATE_HOME": Self.dir + "/state"])
  }

  /// Guards item 2 of the review-policy issue: one slide classified as CSV, JSON, GeoJSON and
  /// through a report carries the same slide flags and the same per-tile flags everywhere.
  func testFlagsAgreeInEveryFormat() throws {
    let sp = try TestSupport.writeSyntheticSlide(at: Self.dir + "/agree.tiff", width: 1536, height: 1024, levels: 2, mpp: 0.5)
    let geo = Self.dir + "/agree.geojson"
    let csv = try eosin(["classify", "--prompts", Self.lung, "--format", "csv", "--geojson", geo, sp])
    XCTAssertEqual(csv.status, 0, csv.stderr)
    let json = try eosin(["classify", "--prompts", Self.lung, "--format", "json", sp])
    XCTAssertEqual(json.status, 0, json.stderr)
    let res = ((try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any])["results"] as! [[String: Any]])[
      0]
    // Slide row.
    let rows = csv.stdout.split(separator: "\n").map {
      $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    }
    let slideRow = rows.first { $0.first == "slide" }!
    let slideCodes = (res["flags"] as! [[String: String]]).map { $0["code"]! }
    XCTAssertEqual(slideRow[7], slideCodes.joined(separator: ";"))
    XCTAssertEqual(slideRow[6], slideCodes.isEmpty ? "no" : "yes")
    // Tile rows, JSON tiles and GeoJSON features, tile by tile.
    let tileRows = rows.filter { $0.first == "tile" }
    let jt = res["tiles"] as! [[String: Any]]
    let g = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: geo))) as! [String: Any]
    let features = (g["features"] as! [[String: Any]]).map { $0["properties"] as! [String: Any] }
    XCTAssertEqual(tileRows.count, jt.count)
    XCTAssertEqual(features.count, jt.count)
    XCTAssertGreaterThan(jt.count, 10)
    var flagged = 0
    for (i, row) in tileRows.enumerated() {
      let codes = (jt[i]["flags"] as! [String]).joined(separator: ";")
      XCTAssertEqual(row[2], "\(jt[i]["x"]!)")
      XCTAssertEqual(row[7], codes, "tile \(i)")
      XCTAssertEqual((features[i]["flags"] as! [String]).joined(separator: ";"), codes, "tile \(i)")
      XCTAssertEqual(features[i]["flag"] as? String, codes.isEmpty ? "ok" : "review")
      if !codes.isEmpty { flagged += 1 }
    }
    // The report's lung field shows the classifier's slide flags.
    let out = Self.dir + "/agree-report"
    let rep = try eosin([
      "report", "--template", TestSupport.projectRoot + "/Prompts/reports/lung-biopsy.json", "--out", out, sp,
    ])
    XCTAssertEqual(rep.status, 0, rep.stderr)
    let rj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/agree.json"))) as! [String: Any]
    let field = (rj["fields"] as! [[String: Any]]).first { $0["name"] as? String == "Diagnosis (classifier)" }!
    let fieldCodes = (field["flags"] as! [[String: String]]).map { $0["code"]! }.filter { $0 != "contradiction" }
    XCTAssertEqual(fieldCodes, slideCodes)
    XCTAssertFalse(
      String(decoding: try Data(contentsOf: URL(fileURLWithPath: out + "/agree.json")), as: UTF8.self).contains("\\/"))
    // The heatmap carries a legend panel under the thumbnail.
    let heat = Self.dir + "/agree-heat"
    XCTAssertEqual(try eosin(["classify", "--prompts", Self.lung, "--heatmap", heat, "--format", "csv", sp]).status, 0)
    let png = try ImageCodec.read(heat + "/agree-lung_adenocarcinoma.png")
    let slide = try Slide(path: sp)
    let th = try slide.thumbnail(maxSize: 1024)
    XCTAssertGreaterThan(png.height, th.image.height + 30)
    _ = flagged
  }

  /// Guards item 3: a temperature fitted by `eosin calibrate` reaches classify, report and eval,
  /// and each names it and its source.
  func testCalibrationReachesEveryCommand() throws {
    let cache = Self.dir + "/cal-cache"
    let tiles = Self.dir + "/cal-tiles"
    for cls in ["lung_aca", "lung_n"] {
      try FileManager.default.createDirectory(atPath: tiles + "/" + cls, withIntermediateDirectories: true)
      for i in 0..<3 {
        var img = TestSupport.syntheticHE(width: 48, height: 48)
        if cls == "lung_n" { for p in stride(from: i, to: img.pixels.count, by: 7) { img.pixels[p] = 250 } }
        try ImageCodec.write(img, to: "\(tiles)/\(cls)/t\(i).png")
      }
    }
    let c = try eosin(["calibrate", "--prompts", Self.lung, "--data", tiles], cache: cache)
    XCTAssertEqual(c.status, 0, c.stderr)
    let sp = try TestSupport.writeSyntheticSlide(at: Self.dir + "/cal.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    let j = try eosin(["classify", "--prompts", Self.lung, "--format", "json", sp], cache: cache)
    let o = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as! [String: Any]
    XCTAssertTrue((o["temperature_source"] as! String).hasPrefix("calibration "), "\(o["temperature_source"]!)")
    let out = Self.dir + "/cal-report"
    let r = try eosin(
      ["report", "--template", TestSupport.projectRoot + "/Prompts/reports/lung-biopsy.json", "--out", out, sp], cache: cache)
    XCTAssertEqual(r.status, 0, r.stderr)
    let md = try String(contentsOfFile: out + "/cal.md", encoding: .utf8)
    XCTAssertTrue(md.contains("judged by: lung set, T="), md)
    XCTAssertTrue(md.contains("(calibration "), md)
    let e = try eosin(["eval", "zero-shot", "--prompts", Self.lung, "--data", tiles, "--json"], cache: cache)
    let eo = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
    XCTAssertTrue((eo["temperature_source"] as! String).hasPrefix("calibration "))
  }

  /// The bad-input folder of the issue: a 0-byte `.svs`, a random-bytes `.tiff`, a slide
  /// without mpp, and two good slides (one with a space in its name).
  static let batch: String = {
    let d = dir + "/batch"
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: d + "/empty.svs", contents: Data())
    var g = SeededBytes(seed: 7)
    FileManager.default.createFile(atPath: d + "/random.tiff", contents: Data((0..<4096).map { _ in g.next() }))
    try! TestSupport.writeSyntheticSlide(at: d + "/nompp.tiff", width: 1024, height: 768, levels: 1, mpp: nil)
    try! TestSupport.writeSyntheticSlide(at: d + "/good1.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    try! TestSupport.writeSyntheticSlide(at: d + "/good two.tiff", width: 1152, height: 768, levels: 1, mpp: 0.5)
    return d
  }()

  struct SeededBytes {
    var s: UInt64
    init(seed: UInt64) { s = seed }
    mutating func next() -> UInt8 {
      s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return UInt8(truncatingIfNeeded: s >> 33)
    }
  }

  /// Guards item 5 and the issue's bad-input case for classify: the good slides are classified,
  /// the three bad ones each get one error line naming the file, a summary comes last, exit 2.
  func testClassifyBatchSurvivesBadInputs() throws {
    let r = try eosin(["classify", "--classes", "tumour,stroma", "--format", "csv", Self.batch])
    XCTAssertEqual(r.status, 2, r.stderr)
    let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("eosin: error: ") }
    XCTAssertEqual(errors.count, 3, r.stderr)
    for bad in ["empty.svs", "random.tiff", "nompp.tiff"] {
      XCTAssertEqual(errors.filter { $0.contains(Self.batch + "/" + bad) }.count, 1, "\(bad): \(r.stderr)")
    }
    XCTAssertTrue(errors.contains { $0.contains("nompp.tiff") && $0.contains("--mpp") })
    let slides = r.stdout.split(separator: "\n").filter { $0.hasPrefix("slide,") }
    XCTAssertEqual(slides.count, 2, r.stdout)
    XCTAssertTrue(slides.contains { $0.contains("good two.tiff") })
    XCTAssertTrue(r.stderr.contains("[") && r.stderr.contains("/5] "), r.stderr)
    XCTAssertTrue(r.stderr.hasSuffix(" s\n") && r.stderr.contains("classified 2 of 5 inputs, 3 FAILED"), r.stderr)
  }

  /// Guards item 5 and the bad-input case for `report --manifest`: a manifest naming the same
  /// five files, a missing file, a duplicated row, a path with spaces and an mpp column (which
  /// rescues the slide without mpp); the good slides are reported, each bad row gets one line,
  /// exit 2, and every slide has a row in summary.csv.
  func testReportManifestSurvivesBadRows() throws {
    _ = Self.batch
    let m = Self.dir + "/batch.csv"
    try
      "slide,mpp\nbatch/empty.svs,\nbatch/random.tiff,\nbatch/nompp.tiff,\nbatch/good1.tiff,\n\"batch/good two.tiff\",\nbatch/missing.svs,\nbatch/good1.tiff,\nbatch/other.svs,x\n"
      .write(toFile: m, atomically: true, encoding: .utf8)
    let out = Self.dir + "/batch-out"
    let r = try eosin([
      "report", "--template", TestSupport.projectRoot + "/Prompts/reports/lung-biopsy.json", "--manifest", m, "--out", out,
    ])
    XCTAssertEqual(r.status, 2, r.stderr)
    let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("eosin: error: ") }
    XCTAssertEqual(errors.count, 6, r.stderr)
    XCTAssertTrue(errors.contains { $0.contains("\(m):8: slide 'batch/good1.tiff' is already listed on line 5") }, r.stderr)
    XCTAssertTrue(errors.contains { $0.contains("\(m):9: mpp 'x'") }, r.stderr)
    XCTAssertTrue(errors.contains { $0.contains("missing.svs") }, r.stderr)
    for f in ["good1.md", "good1.html", "good1.json", "good two.md", "good two.html", "good two.json"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + f), f)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/empty.md"))
    let summary = try String(contentsOfFile: out + "/summary.csv", encoding: .utf8)
    XCTAssertEqual(summary.split(separator: "\n").filter { $0.contains(",done,") }.count, 2, summary)
    XCTAssertEqual(summary.split(separator: "\n").filter { $0.contains(",failed,") }.count, 6, summary)
    XCTAssertTrue(r.stderr.contains("drafted 2 of 8 inputs, 6 FAILED"), r.stderr)
    // --mpp rescues the slide without mpp, and its report says the value was given.
    let n = try eosin([
      "report", "--template", TestSupport.projectRoot + "/Prompts/reports/lung-biopsy.json", "--mpp", "0.5", "--out", out,
      Self.batch + "/nompp.tiff",
    ])
    XCTAssertEqual(n.status, 0, n.stderr)
    XCTAssertTrue(try String(contentsOfFile: out + "/nompp.md", encoding: .utf8).contains("given, not in the file"))
  }

  /// Guards report names: `a.tiff`, `sub/a.tiff` get distinct names that stay the same on a
  /// rerun, and neither overwrites the other.
  func testReportNamesAreUniquePerPath() throws {
    let d = Self.dir + "/names"
    try FileManager.default.createDirectory(atPath: d + "/sub", withIntermediateDirectories: true)
    let a = try TestSupport.writeSyntheticSlide(at: d + "/a.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    let b = try TestSupport.writeSyntheticSlide(at: d + "/sub/a.tiff", width: 1152, height: 768, levels: 1, mpp: 0.5)
    let out = d + "/out"
    let args = ["report", "--template", TestSupport.projectRoot + "/Prompts/reports/lung-biopsy.json", "--out", out, a, b]
    XCTAssertEqual(try eosin(args).status, 0)
    let first = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".md") }.sorted()
    XCTAssertEqual(first.count, 2, "\(first)")
    let again = try eosin(args)
    XCTAssertTrue(again.stderr.contains("up to date"), again.stderr)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasSuffix(".md") }.sorted(), first)
  }

  /// Guards item 7: quoted and escaped paths in :open, a quoted class in :heatmap, :evidence
  /// naming image files, :help listing every command, :classify choosing the set that judges
  /// later answers, and :save recording exactly the line the screen showed, the slide and the
  /// model hashes.
  func testREPLQuotingEvidenceSaveAndHelp() throws {
    let d = Self.dir + "/my slides"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    let sp = try TestSupport.writeSyntheticSlide(at: d + "/case one.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    let heat = Self.dir + "/repl heat.png"
    let save = Self.dir + "/repl-save"
    let script =
      [
        ":help", ":open \"\(sp)\"", ":classify colorectal", "What is the diagnosis?",
        ":heatmap \"normal colorectal mucosa\" \"\(heat)\"", ":save \(save)",
        ":open \(d.replacingOccurrences(of: " ", with: "\\ "))/../cal-tiles/lung_aca/t0.png \(Self.dir)/cal-tiles/lung_n/t1.png",
        "What is the diagnosis?", ":evidence",
      ].joined(separator: "\n") + "\n"
    try ensureCalibrationTiles()
    let r = try eosin(["chat", "--max-tokens", "6"], stdin: script)
    XCTAssertEqual(r.status, 0, r.stderr)
    for c in [
      ":open", ":info", ":classify", ":evidence", ":heatmap", ":report", ":save", ":reset", ":temperature", ":seed", ":quit",
    ] {
      XCTAssertTrue(r.stdout.contains(c + " "), c)
    }
    XCTAssertTrue(r.stdout.contains("opened case one.tiff"), r.stdout)
    XCTAssertTrue(r.stdout.contains("later answers are judged against the colorectal set"), r.stdout)
    XCTAssertTrue(r.stdout.contains("judged against the colorectal set (you chose it with :classify)"), r.stdout)
    XCTAssertTrue(FileManager.default.fileExists(atPath: heat), r.stdout)
    XCTAssertTrue(r.stdout.contains("opened t0.png, t1.png"), r.stdout)
    XCTAssertTrue(r.stdout.contains("  t0.png") || r.stdout.contains("  t1.png"), r.stdout)
    XCTAssertFalse(r.stdout.contains("(0, 0)"), r.stdout)
    // The saved transcript holds the line the screen showed, the slide and the hashes.
    let shown = r.stdout.split(separator: "\n").first { $0.hasPrefix("confidence ") || $0.hasPrefix("⚠ REVIEW:") }!
    let md = try String(contentsOfFile: save + ".md", encoding: .utf8)
    XCTAssertTrue(md.contains(String(shown)), md)
    XCTAssertTrue(md.contains("## case one.tiff"), md)
    XCTAssertTrue(md.contains("CLIP sha256 `") && md.contains("decoder sha256 `"), md)
    let j = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: save + ".json"))) as! [String: Any]
    let turn = (j["turns"] as! [[String: Any]])[0]
    XCTAssertEqual(turn["shown"] as? String, String(shown))
    XCTAssertEqual(turn["prompt_set"] as? String, "colorectal")
  }

  /// The labelled tiles the calibration test writes, reused as images by the REPL test.
  func ensureCalibrationTiles() throws {
    if !FileManager.default.fileExists(atPath: Self.dir + "/cal-tiles/lung_n/t1.png") { try testCalibrationReachesEveryCommand() }
  }
}

/// Hardening: weights are verified on load, and readers refuse declared sizes they cannot hold.
final class HardeningCLITests: XCTestCase {
  /// Guards: a weights file changed by one byte (same size) is refused with one line naming it,
  /// exit 2, and never scored; the untouched bundle still runs.
  func testTamperedWeightsAreRefused() throws {
    let dir = TestSupport.tempDir("eosin-tamper")
    let b = try TestSupport.writeTinyBundle(at: dir + "/bundle")
    let clip = b + "/clip/model.safetensors"
    var man =
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: b + "/manifest.json"))) as! [String: Any]
    let size = (try FileManager.default.attributesOfItem(atPath: clip)[.size] as! Int)
    man["files"] = ["clip/model.safetensors": ["sha256": try SHA256.hex(fileAt: clip), "bytes": size]]
    try JSONSerialization.data(withJSONObject: man).write(to: URL(fileURLWithPath: b + "/manifest.json"))
    let img = dir + "/t.png"
    try ImageCodec.write(TestSupport.syntheticHE(width: 48, height: 48), to: img)
    let ok = try CLITests.run(["classify", "--classes", "a,b", "--weights", b, "--no-cache", img])
    XCTAssertEqual(ok.status, 0, ok.stderr)
    var bytes = try Data(contentsOf: URL(fileURLWithPath: clip))
    bytes[bytes.count - 3] ^= 0x40
    try bytes.write(to: URL(fileURLWithPath: clip))
    let bad = try CLITests.run(["classify", "--classes", "a,b", "--weights", b, "--no-cache", img])
    XCTAssertEqual(bad.status, 2)
    XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
    XCTAssertTrue(bad.stderr.contains("\(clip): sha256") && bad.stderr.contains("does not match the manifest"), bad.stderr)
    XCTAssertTrue(bad.stdout.isEmpty)
  }

  /// Guards: a small JPEG or PNG that declares a huge image is refused before it is decoded.
  func testHugeDeclaredImagesAreRefused() throws {
    let dir = TestSupport.tempDir("eosin-huge")
    // A PNG header declaring 60000 x 60000 pixels, with a tiny (invalid) body.
    var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]
    png += [0, 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60, 8, 2, 0, 0, 0]
    png += [0x0F, 0xB0, 0xE2, 0x15]  // CRC-32 of the IHDR chunk
    png += [0, 0, 0, 8, 73, 68, 65, 84, 120, 156, 3, 0, 0, 0, 0, 1, 72, 6, 137, 210]  // a tiny IDAT chunk
    png += [0, 0, 0, 0, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]
    FileManager.default.createFile(atPath: dir + "/huge.png", contents: Data(png))
    XCTAssertThrowsError(try ImageCodec.read(dir + "/huge.png")) { e in
      XCTAssertTrue("\(e.localizedDescription)".contains("60000x60000"), e.localizedDescription)
    }
    // A real small JPEG whose frame header is patched to claim 46000 x 46000.
    var jpg = try ImageCodec.encodeJPEG(TestSupport.syntheticHE(width: 64, height: 64))
    for i in 0..<(jpg.count - 8) where jpg[i] == 0xFF && jpg[i + 1] == 0xC0 {
      jpg[i + 5] = 0xB3; jpg[i + 6] = 0xB0; jpg[i + 7] = 0xB3; jpg[i + 8] = 0xB0
      break
    }
    FileManager.default.createFile(atPath: dir + "/huge.jpg", contents: Data(jpg))
    XCTAssertThrowsError(try ImageCodec.read(dir + "/huge.jpg")) { e in
      XCTAssertTrue("\(e.localizedDescription)".contains("46000x46000"), e.localizedDescription)
    }
  }
}

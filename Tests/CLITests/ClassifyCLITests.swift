import EosinSlide
import Foundation
import TestSupport
import XCTest

/// `eosin classify`, `calibrate` and `eval zero-shot` end to end on a tiny random bundle, with
/// images, folders and synthetic slides the tests write themselves.
final class ClassifyCLITests: XCTestCase {
  static let bundle: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-cli-bundle")) }()
  static let dir = TestSupport.tempDir("eosin-classify")

  func run(_ args: [String]) throws -> CLITests.Run {
    try CLITests.run(args + ["--weights", Self.bundle, "--cache", Self.dir + "/cache"])
  }

  /// A folder of two classes of tiles plus one undecodable file.
  static let tiles: String = {
    let d = dir + "/tiles"
    for (cls, color) in [("tumour", (150, 60, 160)), ("stroma", (230, 150, 190))] {
      try! FileManager.default.createDirectory(atPath: d + "/" + cls, withIntermediateDirectories: true)
      for i in 0..<4 {
        var img = TestSupport.syntheticHE(width: 48, height: 48)
        for p in stride(from: 0, to: img.pixels.count, by: 3) where (p / 3) % 5 == i {
          img.pixels[p] = UInt8(color.0); img.pixels[p + 1] = UInt8(color.1); img.pixels[p + 2] = UInt8(color.2)
        }
        try! ImageCodec.write(img, to: "\(d)/\(cls)/t\(i).png")
      }
    }
    return d
  }()

  /// Guards: images and folders classify to CSV and JSON; an undecodable image fails on its own
  /// line, the others are classified, and the exit status is 2.
  func testClassifyImagesAndFolders() throws {
    let bad = Self.dir + "/broken.jpg"
    FileManager.default.createFile(atPath: bad, contents: Data([0xFF, 0xD8, 0xFF, 0xE0, 0, 1, 2]))
    let r = try run(["classify", "--classes", "tumour,stroma", "--format", "csv", Self.tiles, bad])
    XCTAssertEqual(r.status, 2, r.stderr)
    let lines = r.stdout.split(separator: "\n")
    XCTAssertEqual(lines[0], "kind,input,x,y,verdict,probability,flagged,flags,reasons,temperature,p(tumour),p(stroma)")
    XCTAssertEqual(lines.filter { $0.hasPrefix("image,") }.count, 8)
    XCTAssertTrue(r.stderr.contains("eosin: error: \(bad): cannot decode image"), r.stderr)
    XCTAssertTrue(r.stderr.contains("classified 8 of 9 inputs, 1 FAILED"), r.stderr)
    let j = try run(["classify", "--classes", "tumour,stroma", "--format", "json", Self.tiles + "/tumour/t0.png"])
    let o = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as! [String: Any]
    let res = (o["results"] as! [[String: Any]])[0]
    let probs = res["probabilities"] as! [String: Double]
    XCTAssertEqual(probs.values.reduce(0, +), 1, accuracy: 1e-4)
  }

  /// Guards: a slide gets a verdict with top-K pooling, a heatmap per class and QuPath GeoJSON
  /// (classification name and colour); the second run reads the slide index from the cache.
  func testClassifySlideOutputsAndCache() throws {
    let sp = Self.dir + "/slide.tiff"
    try TestSupport.writeSyntheticSlide(at: sp, width: 1536, height: 1024, levels: 2, mpp: 0.5)
    let heat = Self.dir + "/heat", geo = Self.dir + "/tiles.geojson"
    let r = try run([
      "classify", "--prompts", TestSupport.projectRoot + "/Prompts/zero-shot/lung.json", "--format", "json", "--heatmap", heat,
      "--geojson", geo, "--top-k", "3", sp,
    ])
    XCTAssertEqual(r.status, 0, r.stderr)
    let res = ((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["results"] as! [[String: Any]])[0]
    XCTAssertEqual(res["top_k"] as? Int, 3)
    XCTAssertEqual(res["cached"] as? Bool, false)
    XCTAssertEqual(((res["evidence"] as! [String: Any])["lung adenocarcinoma"] as! [Any]).count, 3)
    for c in ["lung_adenocarcinoma", "lung_squamous_cell_carcinoma", "benign_lung_tissue", "no_interpretable_tissue"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: "\(heat)/slide-\(c).png"), c)
    }
    let g = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: geo))) as! [String: Any]
    XCTAssertEqual(g["type"] as? String, "FeatureCollection")
    let f = (g["features"] as! [[String: Any]])[0]
    XCTAssertEqual((f["geometry"] as! [String: Any])["type"] as? String, "Polygon")
    let props = f["properties"] as! [String: Any]
    XCTAssertEqual(props["objectType"] as? String, "detection")
    let cls = props["classification"] as! [String: Any]
    XCTAssertNotNil(cls["name"] as? String)
    XCTAssertEqual((cls["color"] as? [Int])?.count, 3)
    let again = try run(["classify", "--prompts", "lung", "--format", "json", sp])
    let res2 =
      ((try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as! [String: Any])["results"] as! [[String: Any]])[0]
    XCTAssertEqual(res2["cached"] as? Bool, true)
    XCTAssertTrue(again.stderr.contains("from cache"))
  }

  /// Guards bad input: a slide without mpp is refused unless --mpp is given.
  func testSlideWithoutMPP() throws {
    let sp = Self.dir + "/nompp.tiff"
    try TestSupport.writeSyntheticSlide(at: sp, width: 1024, height: 768, levels: 1, mpp: nil)
    let r = try run(["classify", "--classes", "a,b", sp])
    XCTAssertEqual(r.status, 2)
    XCTAssertEqual(r.stderr, "eosin: error: \(sp): slide has no microns-per-pixel; pass --mpp VALUE if you know it\n")
    let ok = try run(["classify", "--classes", "a,b", "--mpp", "0.5", "--format", "csv", sp])
    XCTAssertEqual(ok.status, 0, ok.stderr)
    XCTAssertTrue(ok.stdout.contains("no-mpp"))
    XCTAssertTrue(ok.stdout.contains("0.500 µm/px was given"), ok.stdout)
  }

  /// Guards bad input for classify: missing prompt file, malformed JSON, empty folder, unknown
  /// file type; each a one-line error with exit status 2.
  func testClassifyBadInputs() throws {
    let empty = TestSupport.tempDir()
    let badJSON = Self.dir + "/bad.json"
    try "{\"name\": \"x\",\n \"classes\": [}".write(toFile: badJSON, atomically: true, encoding: .utf8)
    FileManager.default.createFile(atPath: Self.dir + "/x.docx", contents: Data([1]))
    let cases: [([String], String)] = [
      (["classify", "--prompts", "/no/such.json", Self.tiles], "prompt set not found"),
      (["classify", "--prompts", badJSON, Self.tiles], "malformed JSON at line 2"),
      (["classify", "--classes", "a,b", empty], "folder holds no images or slides"),
      (["classify", "--classes", "a,b", Self.dir + "/x.docx"], "unknown file type '.docx'"),
    ]
    for (args, needle) in cases {
      let r = try run(args)
      XCTAssertEqual(r.status, 2, args.joined(separator: " "))
      XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
      XCTAssertTrue(r.stderr.contains(needle), r.stderr)
    }
  }

  /// Guards: calibrate writes a calibration file that the next classify picks up; eval prints
  /// the metrics.
  func testCalibrateAndEval() throws {
    let set = Self.dir + "/two.json"
    try #"{"name": "two", "classes": [{"name": "tumour"}, {"name": "stroma"}], "templates": ["{}.", "an image of {}."]}"#.write(
      toFile: set, atomically: true, encoding: .utf8)
    let c = try run(["calibrate", "--prompts", set, "--data", Self.tiles])
    XCTAssertEqual(c.status, 0, c.stderr)
    XCTAssertTrue(c.stdout.contains("fitted on 8 tiles"))
    let e = try run(["eval", "zero-shot", "--prompts", set, "--data", Self.tiles, "--json"])
    XCTAssertEqual(e.status, 0, e.stderr)
    let o = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
    XCTAssertEqual(o["tiles"] as? Int, 8)
    XCTAssertNotNil(o["balanced_accuracy"] as? Double)
    XCTAssertEqual((o["confusion"] as? [[Int]])?.count, 2)
    let k = try run(["classify", "--prompts", set, Self.tiles + "/tumour/t0.png"])
    XCTAssertEqual(k.status, 0)
    // An inline set and the organ check's joint set hash the same in every process, so a second
    // run reads their text embeddings from the cache instead of adding new entries.
    func textEntries() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: Self.dir + "/cache/text"))?.count ?? 0 }
    XCTAssertEqual(try run(["classify", "--classes", "tumour,fat", Self.tiles + "/tumour/t0.png"]).status, 0)
    let entries = textEntries()
    XCTAssertEqual(try run(["classify", "--classes", "tumour,fat", Self.tiles + "/tumour/t0.png"]).status, 0)
    XCTAssertEqual(textEntries(), entries)
    let sh = try run(["eval", "zero-shot", "--prompts", set, "--data", Self.tiles, "--shift", "stain", "--json"])
    XCTAssertEqual(sh.status, 0, sh.stderr)
    XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(sh.stdout.utf8)) as! [String: Any])["shift"] as? String, "stain")
  }

  /// Guards `--wording lm`: classify and eval read the prompts through the language model and
  /// say so; without a usable language model the command stops with one line and status 2.
  func testWordingThroughLanguageModel() throws {
    let gguf = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-llama-F32.gguf"
    let set = TestSupport.projectRoot + "/Prompts/zero-shot/lung.json"
    let k = try run([
      "classify", "--prompts", set, "--wording", "lm", "--wording-lm", gguf, "--format", "table", Self.tiles + "/tumour/t0.png",
    ])
    XCTAssertEqual(k.status, 0, k.stderr)
    XCTAssertTrue(k.stdout.contains("wording read through tiny-llama-F32.gguf"), k.stdout)
    let e = try run([
      "eval", "zero-shot", "--prompts", set, "--label-map", "tumour=lung adenocarcinoma,stroma=benign lung tissue", "--data",
      Self.tiles, "--wording", "lm", "--wording-lm", gguf, "--json",
    ])
    XCTAssertEqual(e.status, 0, e.stderr)
    XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any])["wording"] as? String, "lm")
    // A temperature fitted on the prompts read through the language model holds for that
    // reading only: classify with it uses it, classify as written does not.
    let cal = try run([
      "calibrate", "--prompts", set, "--label-map", "tumour=lung adenocarcinoma,stroma=benign lung tissue", "--data", Self.tiles,
      "--wording", "lm", "--wording-lm", gguf,
    ])
    XCTAssertEqual(cal.status, 0, cal.stderr)
    XCTAssertTrue(cal.stdout.contains("-wording-"), cal.stdout)
    let read = try run([
      "classify", "--prompts", set, "--wording", "lm", "--wording-lm", gguf, "--format", "table", Self.tiles + "/tumour/t0.png",
    ])
    XCTAssertTrue(read.stdout.contains("from calibration "), read.stdout)
    let written = try run([
      "classify", "--prompts", set, "--wording", "as-written", "--format", "table", Self.tiles + "/tumour/t0.png",
    ])
    XCTAssertTrue(written.stdout.contains("from weights manifest"), written.stdout)
    for lm in ["/no/such.gguf", Self.tiles + "/tumour/t0.png"] {
      let r = try run(["classify", "--prompts", set, "--wording", "lm", "--wording-lm", lm, Self.tiles + "/tumour/t0.png"])
      XCTAssertEqual(r.status, 2, r.stderr)
      XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
      XCTAssertTrue(r.stderr.contains(lm), r.stderr)
    }
  }
}

import CHDF5
import EosinSlide
import Foundation
import TestSupport
import XCTest

/// `eosin embed`: TRIDENT/CLAM-layout HDF5 (and safetensors) feature files for slides and images.
final class EmbedCLITests: XCTestCase {
  static let bundle: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-embed-bundle")) }()

  static func read(_ path: String, _ dataset: String) throws -> (rows: Int, cols: Int, first: [Double]) {
    var r: Int64 = 0, c: Int64 = 0
    var first = [Double](repeating: 0, count: 256)
    var err = [CChar](repeating: 0, count: 256)
    guard eosin_h5_read_first_row(path, dataset, &r, &c, &first, 256, &err, err.count) == 0 else {
      throw NSError(domain: String(cString: err), code: 1)
    }
    return (Int(r), Int(c), Array(first.prefix(Int(c))))
  }

  /// Guards: a slide's features are N x D with unit norm, coords N x 2 of level-0 corners,
  /// attributes patch_size and mpp; images go to images.h5 in input order; a rerun skips what is
  /// done; a bad output folder is one line, exit 2, with nothing left behind.
  func testEmbedSlideAndImages() throws {
    let d = TestSupport.tempDir("eosin-embed")
    let slide = try TestSupport.writeSyntheticSlide(at: d + "/case one.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    let img = d + "/tile.png"
    try ImageCodec.write(TestSupport.syntheticHE(width: 48, height: 48), to: img)
    let out = d + "/features"
    let r = try CLITests.run(["embed", "--encoder", Self.bundle, "--out-dir", out, slide, img, img])
    XCTAssertEqual(r.status, 0, r.stderr)
    let f = try Self.read(out + "/case one.h5", "features")
    XCTAssertGreaterThan(f.rows, 10)
    XCTAssertEqual(f.cols, 16)
    XCTAssertEqual(f.first.map { $0 * $0 }.reduce(0, +), 1, accuracy: 1e-4)
    let c = try Self.read(out + "/case one.h5", "coords")
    XCTAssertEqual(c.rows, f.rows)
    XCTAssertEqual(c.cols, 2)
    var v = 0.0
    XCTAssertEqual(eosin_h5_read_coords_attribute(out + "/case one.h5", "patch_size", &v), 0)
    XCTAssertEqual(v, 32)
    XCTAssertEqual(eosin_h5_read_coords_attribute(out + "/case one.h5", "mpp", &v), 0)
    XCTAssertEqual(v, 1, accuracy: 1e-9)
    let im = try Self.read(out + "/images.h5", "coords")
    XCTAssertEqual(im.rows, 2)
    let again = try CLITests.run(["embed", "--encoder", Self.bundle, "--out-dir", out, slide])
    XCTAssertEqual(again.status, 0)
    XCTAssertTrue(again.stderr.isEmpty || again.stderr.contains("up to date"), again.stderr)
    FileManager.default.createFile(atPath: d + "/a-file", contents: Data([1]))
    let bad = try CLITests.run(["embed", "--encoder", Self.bundle, "--out", d + "/a-file/x.h5", slide])
    XCTAssertEqual(bad.status, 2)
    XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
    XCTAssertTrue(bad.stderr.contains("a-file/x.h5"), bad.stderr)
    let st = try CLITests.run([
      "embed", "--encoder", Self.bundle, "--format", "safetensors", "--out", d + "/one.safetensors",
      slide,
    ])
    XCTAssertEqual(st.status, 0, st.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: d + "/one.safetensors"))
  }
}

/// `eosin embed --encoder DIR` with every published layout, and the bad checkpoints.
final class EmbedEncoderCLITests: XCTestCase {
  static let encoders = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/encoders"

  /// Guards: each layout embeds a slide into features of its own width, with coords and the
  /// encoder's family recorded; the rows equal the encoder run directly on the same tiles is
  /// covered by EncoderParityTests, so here the contract is the file.
  func testEveryLayoutEmbedsASlide() throws {
    let d = TestSupport.tempDir("eosin-embed-layouts")
    let slide = try TestSupport.writeSyntheticSlide(at: d + "/s.tiff", width: 1024, height: 768, levels: 1, mpp: 0.5)
    let widths = [
      "timm-l16": 32, "timm-h14-reg": 64, "timm-g14-reg-dinov2": 48, "hf-dinov2": 32, "hf-vit": 32, "hf-vit-v5": 32,
      "openclip-vit": 24, "openclip-coca": 24,
    ]
    for (name, D) in widths.sorted(by: { $0.key < $1.key }) {
      let out = d + "/\(name).h5"
      let r = try CLITests.run(["embed", "--encoder", Self.encoders + "/" + name, "--out", out, slide])
      XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
      let f = try EmbedCLITests.read(out, "features")
      XCTAssertEqual(f.cols, D, name)
      XCTAssertGreaterThan(f.rows, 0, name)
      var v = 0.0
      XCTAssertEqual(eosin_h5_read_coords_attribute(out, "target_mpp", &v), 0)
      XCTAssertEqual(v, 0.5, name)
    }
  }

  /// Copies a fixture folder to a scratch place for damaging.
  func copy(_ name: String, _ d: String) throws -> String {
    let dst = d + "/" + name
    try? FileManager.default.removeItem(atPath: dst)
    try FileManager.default.copyItem(atPath: Self.encoders + "/" + name, toPath: dst)
    return dst
  }

  func expectOneLine(
    _ args: [String], contains: [String], dir: String, file: StaticString = #filePath, line: UInt = #line
  ) throws {
    let r = try CLITests.run(args)
    XCTAssertEqual(r.status, 2, r.stderr, file: file, line: line)
    let lines = r.stderr.split(separator: "\n")
    XCTAssertEqual(lines.count, 1, r.stderr, file: file, line: line)
    for c in contains { XCTAssertTrue(r.stderr.contains(c), "'\(c)' not in: \(r.stderr)", file: file, line: line) }
    let left = (try? FileManager.default.contentsOfDirectory(atPath: dir))?.filter { $0.hasSuffix(".h5") || $0.contains(".tmp-") }
    XCTAssertEqual(left ?? [], [], "nothing half-written", file: file, line: line)
  }

  /// Guards each bad input of the issue: one line naming the file and the problem, exit 2,
  /// nothing written, and a pickle that calls os.system never runs.
  func testBadCheckpointsAreOneLineEach() throws {
    let d = TestSupport.tempDir("eosin-embed-bad")
    let slide = try TestSupport.writeSyntheticSlide(at: d + "/s.tiff", width: 256, height: 256, levels: 1, mpp: 0.5)
    let out = d + "/out"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    func embed(_ enc: String) -> [String] { ["embed", "--encoder", enc, "--out", out + "/f.h5", slide] }

    // A pickle calling os.system.
    let marker = "/tmp/eosin-evil-pickle-ran"
    try? FileManager.default.removeItem(atPath: marker)
    try expectOneLine(
      embed(Self.encoders + "/evil"), contains: ["pytorch_model.bin", "system", "nothing in it is run"], dir: out)
    XCTAssertFalse(FileManager.default.fileExists(atPath: marker))

    // A truncated zip.
    let t = try copy("hf-vit", d)
    let bin = t + "/pytorch_model.bin"
    let full = try Data(contentsOf: URL(fileURLWithPath: bin))
    try full.prefix(full.count / 2).write(to: URL(fileURLWithPath: bin))
    try expectOneLine(embed(t), contains: ["pytorch_model.bin", "zip"], dir: out)

    // A zip entry whose local header points outside the archive: the first central-directory
    // entry's offset field set past the end.
    let z = try copy("timm-l16", d)
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: z + "/pytorch_model.bin")))
    let sig: [UInt8] = [0x50, 0x4B, 0x01, 0x02]
    let cd = (0..<(bytes.count - 4)).first { Array(bytes[$0..<($0 + 4)]) == sig }!
    for k in 0..<4 { bytes[cd + 42 + k] = 0x7F }
    try Data(bytes).write(to: URL(fileURLWithPath: z + "/pytorch_model.bin"))
    try expectOneLine(embed(z), contains: ["pytorch_model.bin", "outside the archive"], dir: out)

    // An unknown timm architecture, and an unsupported model_args key.
    let a = try copy("timm-h14-reg", d)
    var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: a + "/config.json"))) as! [String: Any]
    let original = cfg
    cfg["architecture"] = "vit_so400m_patch14_siglip_224"
    try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: a + "/config.json"))
    try expectOneLine(embed(a), contains: ["config.json", "unknown timm architecture 'vit_so400m_patch14_siglip_224'"], dir: out)
    cfg = original
    var args = cfg["model_args"] as! [String: Any]
    args["attn_layer"] = "flash"
    cfg["model_args"] = args
    try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: a + "/config.json"))
    try expectOneLine(embed(a), contains: ["config.json", "unsupported model_args key 'attn_layer'"], dir: out)

    // A state dict missing a tensor, and one with a wrong shape (the architecture says depth 3;
    // the config says embed_dim 48 against weights of 32).
    try JSONSerialization.data(withJSONObject: original).write(to: URL(fileURLWithPath: a + "/config.json"))
    cfg = original
    args = cfg["model_args"] as! [String: Any]
    args["depth"] = 3
    cfg["model_args"] = args
    try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: a + "/config.json"))
    try expectOneLine(embed(a), contains: ["model.safetensors", "blocks.2.", "missing"], dir: out)
    args["depth"] = 2
    args["embed_dim"] = 48
    args["num_heads"] = 3
    cfg["model_args"] = args
    try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: a + "/config.json"))
    try expectOneLine(embed(a), contains: ["model.safetensors", "expected shape", "found"], dir: out)

    // A shard index naming a missing file.
    let s = try copy("timm-g14-reg-dinov2", d)
    try FileManager.default.removeItem(atPath: s + "/model-00002-of-00002.safetensors")
    try expectOneLine(
      embed(s), contains: ["model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing"], dir: out)

    // An output path in a folder that cannot be written (a read-only file system, which holds
    // for root too).
    let r = try CLITests.run([
      "embed", "--encoder", Self.encoders + "/hf-vit", "--out", "/proc/eosin-f.h5", slide,
    ])
    XCTAssertEqual(r.status, 2, r.stderr)
    XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
    XCTAssertTrue(r.stderr.contains("/proc/eosin-f.h5"), r.stderr)
  }
}

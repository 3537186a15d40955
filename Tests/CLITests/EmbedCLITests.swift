import CHDF5
import EosinSlide
import Foundation
import TestSupport
import XCTest

/// `eosin embed`: TRIDENT/CLAM-layout HDF5 (and safetensors) feature files for slides and images.
final class EmbedCLITests: XCTestCase {
  static let bundle: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-embed-bundle")) }()

  func read(_ path: String, _ dataset: String) throws -> (rows: Int, cols: Int, first: [Double]) {
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
    let r = try CLITests.run(["embed", "--encoder", Self.bundle, "--out-dir", out, "--cache", d + "/cache", slide, img, img])
    XCTAssertEqual(r.status, 0, r.stderr)
    let f = try read(out + "/case one.h5", "features")
    XCTAssertGreaterThan(f.rows, 10)
    XCTAssertEqual(f.cols, 16)
    XCTAssertEqual(f.first.map { $0 * $0 }.reduce(0, +), 1, accuracy: 1e-4)
    let c = try read(out + "/case one.h5", "coords")
    XCTAssertEqual(c.rows, f.rows)
    XCTAssertEqual(c.cols, 2)
    var v = 0.0
    XCTAssertEqual(eosin_h5_read_coords_attribute(out + "/case one.h5", "patch_size", &v), 0)
    XCTAssertEqual(v, 32)
    XCTAssertEqual(eosin_h5_read_coords_attribute(out + "/case one.h5", "mpp", &v), 0)
    XCTAssertEqual(v, 1, accuracy: 1e-9)
    let im = try read(out + "/images.h5", "coords")
    XCTAssertEqual(im.rows, 2)
    let again = try CLITests.run(["embed", "--encoder", Self.bundle, "--out-dir", out, "--cache", d + "/cache", slide])
    XCTAssertEqual(again.status, 0)
    XCTAssertTrue(again.stderr.isEmpty || again.stderr.contains("up to date"), again.stderr)
    FileManager.default.createFile(atPath: d + "/a-file", contents: Data([1]))
    let bad = try CLITests.run(["embed", "--encoder", Self.bundle, "--out", d + "/a-file/x.h5", "--cache", d + "/cache", slide])
    XCTAssertEqual(bad.status, 2)
    XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
    XCTAssertTrue(bad.stderr.contains("a-file/x.h5"), bad.stderr)
    let st = try CLITests.run([
      "embed", "--encoder", Self.bundle, "--format", "safetensors", "--out", d + "/one.safetensors", "--cache", d + "/cache",
      slide,
    ])
    XCTAssertEqual(st.status, 0, st.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: d + "/one.safetensors"))
  }
}

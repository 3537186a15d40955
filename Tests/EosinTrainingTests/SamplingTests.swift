import EosinTraining
import TestSupport
import XCTest

final class SamplingTests: XCTestCase {
  /// Guards the organ- and class-balanced draws: each dataset gets its share whatever its size,
  /// classes within a dataset get shares in proportion to the square root of their sizes, and
  /// `draw` picks by cumulative weight.
  func testDatasetAndClassShares() {
    // Dataset a: class 0 with 100 tiles, class 1 with 25; dataset b: 10 tiles of class 2.
    let datasets = Array(repeating: "a", count: 125) + Array(repeating: "b", count: 10)
    let labels = Array(repeating: 0, count: 100) + Array(repeating: 1, count: 25) + Array(repeating: 2, count: 10)
    let w = TileSampling.weights(datasets: datasets, labels: labels, datasetShare: ["a": 0.5, "b": 0.5])
    let sum = { (r: Range<Int>) in r.map { w[$0] }.reduce(0, +) }
    XCTAssertEqual(sum(0..<125), 0.5, accuracy: 1e-9)
    XCTAssertEqual(sum(125..<135), 0.5, accuracy: 1e-9)
    // sqrt(100) : sqrt(25) = 2 : 1 within dataset a.
    XCTAssertEqual(sum(0..<100) / sum(100..<125), 2, accuracy: 1e-9)
    XCTAssertEqual(w[0], w[99], accuracy: 1e-12)
    var acc = 0.0
    let cumulative = w.map {
      acc += $0
      return acc
    }
    XCTAssertEqual(TileSampling.draw(cumulative, 0), 0)
    XCTAssertEqual(TileSampling.draw(cumulative, 0.999_999), 134)
    XCTAssertEqual(TileSampling.draw(cumulative, 0.5 + 1e-9), 125)
    // Empirical shares over many uniform draws.
    var rng = SeededRNG(seed: 7)
    var hits = [0, 0, 0]
    for _ in 0..<20000 { hits[labels[TileSampling.draw(cumulative, Double(rng.uniform()))]] += 1 }
    XCTAssertEqual(Double(hits[2]) / 20000, 0.5, accuracy: 0.02)
    XCTAssertEqual(Double(hits[0]) / Double(hits[1]), 2, accuracy: 0.15)
  }

  /// The training augmentation keeps the output finite and in range, and with blur and JPEG
  /// always on still changes nothing about the output's size.
  func testAugmentationWithBlurAndJPEG() {
    var a = Augmenter(size: 32)
    a.blurChance = 1
    a.jpegChance = 1
    let src = TestSupport.syntheticHE(width: 40, height: 40)
    let img = RawImage(width: 40, height: 40, pixels: src.pixels)
    var out = [Float](repeating: .nan, count: 3 * 32 * 32)
    var rng = SeededRNG(seed: 3)
    out.withUnsafeMutableBufferPointer { a.augment(img, rng: &rng, into: $0.baseAddress!) }
    XCTAssertTrue(out.allSatisfy { $0.isFinite && abs($0) < 3 })
    var plain = [Float](repeating: .nan, count: 3 * 32 * 32)
    plain.withUnsafeMutableBufferPointer { a.plain(img, into: $0.baseAddress!) }
    XCTAssertNotEqual(out, plain)
  }

  /// Guards the stratified group split: a label with 7 groups (PANDA's Gleason 4) still has
  /// groups in val and test; every tile of a group lands in one split; a group counts under its
  /// most frequent label; the result depends only on the data.
  func testStratifiedGroupSplit() {
    var groups: [String] = [], labels: [String] = []
    for g in 0..<7 { for _ in 0..<5 { groups.append("rare-\(g)"); labels.append("g4") } }
    for g in 0..<40 { for _ in 0..<3 { groups.append("common-\(g)"); labels.append("benign") } }
    // A mixed group: two benign tiles, one g4 tile; it counts as benign.
    groups += ["mixed", "mixed", "mixed"]
    labels += ["benign", "g4", "benign"]
    let s = TileManifest.splits(dataset: "panda", groups: groups, labels: labels)
    XCTAssertEqual(s.count, 48)
    let rare = (0..<7).map { s["rare-\($0)"]! }
    XCTAssertEqual(rare.filter { $0 == .train }.count, 5)
    XCTAssertEqual(rare.filter { $0 == .val }.count, 1)
    XCTAssertEqual(rare.filter { $0 == .test }.count, 1)
    let common = s.filter { $0.key.hasPrefix("common") || $0.key == "mixed" }.map(\.value)
    XCTAssertEqual(common.filter { $0 == .train }.count, 29)  // ranks with (i + 0.5) / 41 < 0.7
    XCTAssertEqual(common.filter { $0 == .test }.count, 8)
    XCTAssertEqual(TileManifest.splits(dataset: "panda", groups: groups.reversed(), labels: labels.reversed()), s)
    XCTAssertNotEqual(TileManifest.splits(dataset: "other", groups: groups, labels: labels), s)
  }
}

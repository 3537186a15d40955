import EosinModels
import Foundation
import TestSupport
import XCTest

/// The tissue statistics against their NumPy definition
/// (`Scripts/reference/make_tissue_features_fixture.py`, skimage's `rgb2hed` convention).
final class TissueFeaturesTests: XCTestCase {
  static let fixture = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/tissue-features.json"

  /// Guards every one of the 123 statistics (stain percentiles, histograms, local binary patterns
  /// and gradients at three scales) within 1e-6 of NumPy, from RGB and from preprocessed pixels.
  func testMatchesNumPy() throws {
    let o = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.fixture))) as? [String: Any])
    let S = try XCTUnwrap(o["size"] as? Int)
    let rgb = try XCTUnwrap(o["rgb_planar"] as? [Double])
    let ref = try XCTUnwrap(o["features"] as? [Double])
    XCTAssertEqual(ref.count, TissueFeatures.count)
    let ours = TissueFeatures.compute(rgb: rgb, size: S)
    XCTAssertEqual(ours.count, TissueFeatures.count)
    for i in ref.indices { XCTAssertEqual(Double(ours[i]), ref[i], accuracy: 1e-6 + 1e-5 * abs(ref[i]), "statistic \(i)") }
    // The same numbers from the image tower's input (normalised by the preprocessing's mean and std).
    let pre = ImagePreprocessor(imageSize: S)
    var px = [Float](repeating: 0, count: 3 * S * S)
    for c in 0..<3 { for p in 0..<(S * S) { px[c * S * S + p] = (Float(rgb[c * S * S + p]) - pre.mean[c]) / pre.std[c] } }
    let fromPixels = px.withUnsafeBufferPointer {
      TissueFeatures.compute(pixels: $0.baseAddress!, size: S, mean: pre.mean, std: pre.std)
    }
    var worst: Float = 0
    for i in ref.indices where !(i >= 21 && i < 45) { worst = max(worst, abs(fromPixels[i] - ours[i])) }
    XCTAssertLessThan(worst, 1e-3, "statistics from preprocessed pixels")
    // Histogram shares still sum to one per channel (a value on a bin edge may move by one bin).
    for c in 0..<3 { XCTAssertEqual(fromPixels[(21 + 8 * c)..<(29 + 8 * c)].reduce(0, +), 1, accuracy: 1e-5) }
  }

  /// A flat grey image: no stain spread, no gradient, one local binary pattern (all neighbours
  /// equal to the centre count as set: pattern 8).
  func testFlatImage() {
    let S = 16
    let f = TissueFeatures.compute(rgb: [Double](repeating: 0.5, count: 3 * S * S), size: S)
    for s in 0..<3 { XCTAssertEqual(f[7 * s + 6], 0, accuracy: 1e-7, "stain \(s) std") }
    for block in 0..<6 {
      let base = 45 + 13 * block
      XCTAssertEqual(f[base + 8], 1, accuracy: 1e-7)
      XCTAssertEqual(f[base + 10], 0, accuracy: 1e-7)
    }
  }
}

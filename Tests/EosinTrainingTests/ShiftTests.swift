import EosinSlide
import EosinTraining
import TestSupport
import XCTest

final class ShiftTests: XCTestCase {
  /// Guards the robustness shifts: `none` is the identity, a flat image stays flat under blur,
  /// the stain shift makes haematoxylin-blue paler and changes pink, and JPEG keeps the size.
  func testShifts() {
    let img = TestSupport.syntheticHE(width: 40, height: 32)
    XCTAssertEqual(ImageShift.none.apply(img), img)
    let flat = RGBImage(width: 16, height: 16, fill: (200, 120, 180))
    XCTAssertEqual(ImageShift.blur.apply(flat), flat)
    let stained = ImageShift.stain.apply(img)
    XCTAssertNotEqual(stained, img)
    XCTAssertEqual(stained.width, img.width)
    // A nucleus-like dark blue pixel gets lighter (less haematoxylin).
    let blue = RGBImage(width: 1, height: 1, fill: (60, 40, 140))
    let b = ImageShift.stain.apply(blue)
    XCTAssertGreaterThan(Int(b.pixels[0]) + Int(b.pixels[1]) + Int(b.pixels[2]), 60 + 40 + 140)
    let j = ImageShift.jpeg.apply(img)
    XCTAssertEqual(j.width, 40)
    XCTAssertEqual(j.height, 32)
  }
}

import EosinSlide
import Foundation
import TestSupport
import XCTest

final class SlideTests: XCTestCase {
  static var dir = TestSupport.tempDir("eosin-slide")
  static var slidePath: String = {
    try! TestSupport.writeSyntheticSlide(at: dir + "/synthetic.tiff", width: 2048, height: 1536, levels: 3, tile: 256, mpp: 0.5)
  }()
  static var source = TestSupport.syntheticHE(width: 2048, height: 1536)

  /// Guards: a pyramidal tiled TIFF written by libtiff opens as generic-tiff with its levels and
  /// the mpp from its resolution tags.
  func testSyntheticPyramidLevelsAndMPP() throws {
    let s = try Slide(path: Self.slidePath)
    XCTAssertEqual(s.vendor, "generic-tiff")
    XCTAssertEqual(s.levels.map { [$0.width, $0.height] }, [[2048, 1536], [1024, 768], [512, 384]])
    XCTAssertEqual(s.levels.map { $0.downsample }, [1, 2, 4])
    XCTAssertEqual(s.mppX!, 0.5, accuracy: 1e-4)
    XCTAssertEqual(s.mppY!, 0.5, accuracy: 1e-4)
    XCTAssertEqual(s.bestLevel(forDownsample: 3.0), 1)
    XCTAssertEqual(s.bestLevel(forDownsample: 4.0), 2)
    XCTAssertEqual(s.bestLevel(forDownsample: 0.5), 0)
  }

  /// Guards: readRegion returns the exact level-0 pixels (lossless file), un-premultiplied.
  func testReadRegionPixelsMatchSource() throws {
    let s = try Slide(path: Self.slidePath)
    let r = try s.readRegion(x: 700, y: 500, level: 0, width: 300, height: 200)
    XCTAssertEqual(r, Self.source.crop(x: 700, y: 500, width: 300, height: 200))
  }

  /// Guards: the part of a region beyond the slide is white background, not black.
  func testRegionPartlyOutsideIsWhite() throws {
    let s = try Slide(path: Self.slidePath)
    let r = try s.readRegion(x: 2040, y: 0, level: 0, width: 16, height: 4)
    XCTAssertEqual(r[12, 2].0, 255)
    XCTAssertEqual(r[12, 2].1, 255)
    XCTAssertEqual(r[12, 2].2, 255)
  }

  /// Guards bad input: a region entirely outside the slide throws a message naming the file.
  func testRegionOutsideThrows() throws {
    let s = try Slide(path: Self.slidePath)
    XCTAssertThrowsError(try s.readRegion(x: 5000, y: 0, level: 0, width: 10, height: 10)) { e in
      XCTAssertTrue(e.localizedDescription.contains("synthetic.tiff"))
      XCTAssertTrue(e.localizedDescription.contains("outside the slide"))
    }
    XCTAssertThrowsError(try s.readRegion(x: -100, y: -100, level: 0, width: 10, height: 10))
    XCTAssertThrowsError(try s.readRegion(x: 0, y: 0, level: 9, width: 10, height: 10))
  }

  /// Guards: the tissue mask finds the synthetic ellipse (area pi*0.3*0.35 = 0.33 of the slide)
  /// and calls the slide brightfield.
  func testTissueMaskOnSyntheticSlide() throws {
    let s = try Slide(path: Self.slidePath)
    let m = try TissueDetector().detect(s)
    XCTAssertEqual(m.tissueFraction, Double.pi * 0.3 * 0.35, accuracy: 0.05)
    XCTAssertEqual(m.modality, .brightfield)
    XCTAssertEqual(m.fraction(x0: 900, y0: 768 - 64, width: 128, height: 128), 1, accuracy: 1e-9)  // centre
    XCTAssertEqual(m.fraction(x0: 0, y0: 0, width: 128, height: 128), 0, accuracy: 1e-9)  // corner
  }

  /// Guards: a fluorescence-like image (dark background) is reported as not brightfield.
  func testDarkBackgroundIsFlagged() {
    var img = RGBImage(width: 64, height: 64, fill: (8, 8, 12))
    for y in 20..<40 { for x in 20..<40 { let i = (y * 64 + x) * 3; img.pixels[i + 2] = 200 } }
    let m = TissueDetector().detect(img, micronsPerPixel: 16)
    XCTAssertEqual(m.modality, .darkBackground)
    XCTAssertNotNil(m.modalityReason)
  }

  /// Guards: the grid at 1.0 µm/px, 128 px on a 0.5 µm/px slide reads level 1 one-to-one, keeps
  /// only tissue tiles, has level-0 coordinates, and is deterministic.
  func testTileGridOneToOne() throws {
    let s = try Slide(path: Self.slidePath)
    let m = try TissueDetector().detect(s)
    let t = try Tiler(slide: s, mpp: 1.0, tileSize: 128, tissue: m, minTissue: 0.5)
    XCTAssertEqual(t.grid.cols, 8)
    XCTAssertEqual(t.grid.rows, 6)
    XCTAssertEqual(t.grid.level, 1)
    XCTAssertEqual(t.grid.extent0, 256, accuracy: 1e-9)
    XCTAssertGreaterThan(t.grid.tiles.count, 4)
    XCTAssertLessThan(t.grid.tiles.count, 48)
    for tile in t.grid.tiles {
      XCTAssertEqual(tile.x, tile.col * 256)
      XCTAssertEqual(tile.y, tile.row * 256)
      XCTAssertGreaterThanOrEqual(tile.tissue, 0.5)
    }
    let tile = t.grid.tiles[0]
    let img = try t.read(tile)
    XCTAssertEqual(img.width, 128)
    XCTAssertEqual(img, try s.readRegion(x: tile.x, y: tile.y, level: 1, width: 128, height: 128))
    let again = try Tiler(slide: s, mpp: 1.0, tileSize: 128, tissue: m, minTissue: 0.5)
    XCTAssertEqual(again.grid.tiles, t.grid.tiles)
    var n = 0
    for (ref, px) in t.tiles() {
      XCTAssertEqual(ref.index, n)
      XCTAssertEqual(px.width, 128)
      n += 1
    }
    XCTAssertEqual(n, t.grid.tiles.count)
  }

  /// Guards: a target mpp between levels is resampled to the exact size; a flat colour stays flat.
  func testTileResampledToExactMPP() throws {
    let dir = TestSupport.tempDir()
    let p = dir + "/flat.tiff"
    try TIFFWriter.writePyramid(
      RGBImage(width: 1024, height: 1024, fill: (200, 100, 150)), to: p, levels: 2, tile: 256, mpp: 0.25)
    let s = try Slide(path: p)
    let t = try Tiler(slide: s, mpp: 0.6, tileSize: 100, tissue: nil)
    XCTAssertEqual(t.grid.mpp, 0.6, accuracy: 1e-9)
    XCTAssertEqual(t.grid.extent0, 240, accuracy: 1e-9)
    XCTAssertEqual(t.grid.level, 1)
    XCTAssertEqual(t.grid.cols, 4)
    let img = try t.read(t.grid.tiles[5])
    XCTAssertEqual(img.width, 100)
    XCTAssertEqual(img[50, 50].0, 200)
    XCTAssertEqual(img[99, 99].1, 100)
  }

  /// Guards: a slide without mpp is refused with the actionable message, and accepted with an
  /// explicit mpp.
  func testNoMPPRefusedUnlessGiven() throws {
    let p = TestSupport.tempDir() + "/nompp.tiff"
    try TestSupport.writeSyntheticSlide(at: p, width: 512, height: 512, levels: 1, mpp: nil)
    let s = try Slide(path: p)
    XCTAssertNil(s.mppX)
    XCTAssertThrowsError(try Tiler(slide: s, mpp: 0.5, tileSize: 64, tissue: nil)) { e in
      XCTAssertEqual(e.localizedDescription, "\(p): slide has no microns-per-pixel; pass --mpp VALUE if you know it")
    }
    XCTAssertEqual(try Tiler(slide: s, mpp: 0.5, tileSize: 64, overrideMPP: 0.5, tissue: nil).grid.tiles.count, 64)
  }

  /// Guards privacy: properties are whitelisted, so an ImageDescription holding a name is absent,
  /// and label/macro images need an explicit request.
  func testPropertiesArePHISafe() throws {
    let p = TestSupport.tempDir() + "/phi.tiff"
    try TestSupport.writeSyntheticSlide(at: p, width: 512, height: 512, levels: 1, description: "Patient: Jane Doe-Testpatient")
    let s = try Slide(path: p)
    XCTAssertFalse(s.properties.values.contains { $0.contains("Doe-Testpatient") })
    XCTAssertTrue(s.identifyingProperties().values.contains { $0.contains("Doe-Testpatient") })
    XCTAssertThrowsError(try s.associatedImage("label", allowIdentifying: false))
  }

  /// Guards: PNG and TIFF round-trip exactly; JPEG within lossy tolerance.
  func testImageCodecsRoundTrip() throws {
    let img = TestSupport.syntheticHE(width: 97, height: 61)
    let dir = TestSupport.tempDir()
    try ImageCodec.write(img, to: dir + "/a.png")
    XCTAssertEqual(try ImageCodec.read(dir + "/a.png"), img)
    try TIFFWriter.writePlain(img, to: dir + "/a.tif")
    XCTAssertEqual(try ImageCodec.read(dir + "/a.tif"), img)
    try ImageCodec.write(img, to: dir + "/a.jpg", jpegQuality: 95)
    let j = try ImageCodec.read(dir + "/a.jpg")
    XCTAssertEqual(j.width, 97)
    var err = 0.0
    for i in 0..<img.pixels.count { err += abs(Double(img.pixels[i]) - Double(j.pixels[i])) }
    XCTAssertLessThan(err / Double(img.pixels.count), 6)
  }

  /// Guards bad input: undecodable bytes with an image extension give a one-line error naming the file.
  func testCorruptImageErrors() throws {
    let dir = TestSupport.tempDir()
    FileManager.default.createFile(atPath: dir + "/bad.jpg", contents: Data([0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3]))
    XCTAssertThrowsError(try ImageCodec.read(dir + "/bad.jpg")) { e in
      XCTAssertTrue(e.localizedDescription.hasPrefix(dir + "/bad.jpg: cannot decode"))
    }
    FileManager.default.createFile(atPath: dir + "/x.bin", contents: Data([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    XCTAssertThrowsError(try ImageCodec.read(dir + "/x.bin")) { e in
      XCTAssertTrue(e.localizedDescription.contains("unknown image type"))
    }
  }

  /// Guards bad input: every bad slide path gives its own one-line error naming the file.
  func testBadSlideInputs() throws {
    let dir = TestSupport.tempDir()
    func msg(_ p: String) -> String {
      do { _ = try Slide(path: p); return "opened" } catch { return error.localizedDescription }
    }
    XCTAssertEqual(msg(dir + "/missing.svs"), "\(dir)/missing.svs: no such file")
    XCTAssertEqual(msg(dir), "\(dir): is a directory, not a slide file")
    FileManager.default.createFile(atPath: dir + "/empty.svs", contents: Data())
    XCTAssertEqual(msg(dir + "/empty.svs"), "\(dir)/empty.svs: file is empty (0 bytes)")
    var rng = SystemRandomNumberGenerator()
    FileManager.default.createFile(
      atPath: dir + "/random.svs", contents: Data((0..<100_000).map { _ in UInt8.random(in: 1...255, using: &rng) }))
    XCTAssertTrue(msg(dir + "/random.svs").hasPrefix("\(dir)/random.svs: not a slide format"))
    try ImageCodec.write(RGBImage(width: 8, height: 8), to: dir + "/tile.png")
    XCTAssertTrue(msg(dir + "/tile.png").contains("is a plain PNG image, not a whole-slide image; pass it as an image input"))
    // A truncated pyramid: the first 64 KB of a synthetic slide.
    let full = try Data(contentsOf: URL(fileURLWithPath: Self.slidePath))
    FileManager.default.createFile(atPath: dir + "/trunc.tiff", contents: full.prefix(min(65536, full.count / 2)))
    XCTAssertTrue(msg(dir + "/trunc.tiff").hasPrefix("\(dir)/trunc.tiff: "))
    XCTAssertNotEqual(msg(dir + "/trunc.tiff"), "opened")
  }

  /// Guards bad input: a truncated real slide (first 64 KB of CMU-1-Small-Region.svs) fails
  /// cleanly, either at open or at the first read.
  func testTruncatedRealSlide() throws {
    guard let data = TestSupport.sharedData else { throw XCTSkip("../shared/data absent: real-slide test skipped") }
    let full = try Data(contentsOf: URL(fileURLWithPath: data + "/slides/CMU-1-Small-Region.svs"))
    let p = TestSupport.tempDir() + "/CMU-trunc.svs"
    FileManager.default.createFile(atPath: p, contents: full.prefix(min(65536, full.count / 2)))
    do {
      let s = try Slide(path: p)
      XCTAssertThrowsError(try s.readRegion(x: 0, y: 0, level: 0, width: 512, height: 512)) { e in
        XCTAssertTrue(e.localizedDescription.hasPrefix(p + ": "))
      }
    } catch {
      XCTAssertTrue(error.localizedDescription.hasPrefix(p + ": "))
    }
  }

  /// Guards: the real Aperio sample reads with the documented vendor, size and mpp.
  func testRealAperioSlide() throws {
    guard let data = TestSupport.sharedData else { throw XCTSkip("../shared/data absent: real-slide test skipped") }
    let s = try Slide(path: data + "/slides/CMU-1-Small-Region.svs")
    XCTAssertEqual(s.vendor, "aperio")
    XCTAssertEqual(s.dimensions.width, 2220)
    XCTAssertEqual(s.dimensions.height, 2967)
    XCTAssertEqual(s.mppX!, 0.499, accuracy: 1e-3)
    XCTAssertEqual(s.objectivePower, 20)
    let m = try TissueDetector().detect(s)
    XCTAssertEqual(m.modality, .brightfield)
    XCTAssertGreaterThan(m.tissueFraction, 0.2)
    XCTAssertLessThan(m.tissueFraction, 0.6)
    XCTAssertTrue(s.associatedImageNames.contains("label"))
    XCTAssertNil(s.properties["aperio.Filename"])
  }

  /// Guards: the fluorescence NDPI opens with 7 levels and is flagged as not brightfield.
  func testRealFluorescenceNDPI() throws {
    guard let data = TestSupport.sharedData else { throw XCTSkip("../shared/data absent: real-slide test skipped") }
    let s = try Slide(path: data + "/slides/Hamamatsu-DAPI-fluorescence.ndpi")
    XCTAssertEqual(s.vendor, "hamamatsu")
    XCTAssertEqual(s.levels.count, 7)
    XCTAssertEqual(s.mppX!, 0.228, accuracy: 1e-3)
    let m = try TissueDetector().detect(s)
    XCTAssertFalse(m.looksBrightfield)
  }
}

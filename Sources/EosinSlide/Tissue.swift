import Foundation

/// How a slide's thumbnail looks, for deciding whether an H&E model applies.
public enum Modality: String, Codable, Sendable {
  /// Bright background with stained tissue: brightfield, as H&E.
  case brightfield
  /// Mostly dark background: fluorescence or a dark-field scan.
  case darkBackground = "dark-background"
  /// Bright background but almost no colour: unstained, greyscale or blank.
  case unstained
}

/// The result of tissue detection on a thumbnail.
public struct TissueMask: Sendable {
  public var width: Int
  public var height: Int
  /// 1 where tissue, 0 elsewhere; row-major (H, W).
  public var mask: [UInt8]
  /// Level-0 pixels per mask pixel, in x and y.
  public var downsampleX: Double
  public var downsampleY: Double
  /// Share of mask pixels that are tissue, 0...1.
  public var tissueFraction: Double
  /// The Otsu threshold chosen on the saturation channel (0...255).
  public var threshold: Int
  public var modality: Modality
  /// A plain-words reason when `modality` is not brightfield.
  public var modalityReason: String?

  /// Whether the slide looks like a brightfield stain (H&E) that Eosin's models were built for.
  public var looksBrightfield: Bool { modality == .brightfield }

  /// Fraction of tissue inside a level-0 rectangle, counted over the mask pixels whose centres
  /// fall inside it (at least the nearest pixel).
  public func fraction(x0: Double, y0: Double, width: Double, height: Double) -> Double {
    let mx0 = x0 / downsampleX, my0 = y0 / downsampleY
    let mx1 = (x0 + width) / downsampleX, my1 = (y0 + height) / downsampleY
    var c0 = Int((mx0 - 0.5).rounded(.up)), c1 = Int((mx1 - 0.5).rounded(.up))
    var r0 = Int((my0 - 0.5).rounded(.up)), r1 = Int((my1 - 0.5).rounded(.up))
    if c1 <= c0 { c0 = Int(((mx0 + mx1) / 2).rounded(.down)); c1 = c0 + 1 }
    if r1 <= r0 { r0 = Int(((my0 + my1) / 2).rounded(.down)); r1 = r0 + 1 }
    c0 = max(0, c0); r0 = max(0, r0); c1 = min(self.width, c1); r1 = min(self.height, r1)
    if c1 <= c0 || r1 <= r0 { return 0 }
    var n = 0
    for r in r0..<r1 { for c in c0..<c1 where mask[r * self.width + c] != 0 { n += 1 } }
    return Double(n) / Double((c1 - c0) * (r1 - r0))
  }
}

/// Tissue detection on a low-resolution thumbnail (8–32 µm/px): Otsu threshold on saturation,
/// morphological closing then opening, and removal of components below a minimum area.
public struct TissueDetector: Sendable {
  /// Target thumbnail resolution in microns per pixel.
  public var thumbnailMPP: Double = 16
  /// Components smaller than this area (µm²) are dropped. Without mpp, 16 µm/px is assumed.
  public var minComponentArea: Double = 40_000
  /// Floor on the saturation threshold, so an all-glass thumbnail does not split its noise.
  public var minSaturation: Int = 20
  /// Pixels brighter than this (mean of RGB) are never tissue.
  public var maxBrightness: Int = 235

  public init() {}

  /// Detects tissue on a slide, reading a thumbnail at ``thumbnailMPP``. O(thumbnail pixels).
  public func detect(_ slide: Slide) throws -> TissueMask {
    let t = try slide.thumbnail(targetMPP: thumbnailMPP, maxSize: 4096)
    let mpp = slide.mppX.map { $0 * t.downsampleX } ?? thumbnailMPP
    return detect(t.image, downsampleX: t.downsampleX, downsampleY: t.downsampleY, micronsPerPixel: mpp)
  }

  /// Detects tissue on an RGB thumbnail whose pixels cover `downsampleX` x `downsampleY` level-0
  /// pixels and `micronsPerPixel` microns each.
  public func detect(_ img: RGBImage, downsampleX: Double = 1, downsampleY: Double = 1, micronsPerPixel: Double) -> TissueMask {
    let n = img.width * img.height
    var sat = [UInt8](repeating: 0, count: n)
    var lum = [UInt8](repeating: 0, count: n)
    var hist = [Int](repeating: 0, count: 256)
    for i in 0..<n {
      let r = Int(img.pixels[3 * i]), g = Int(img.pixels[3 * i + 1]), b = Int(img.pixels[3 * i + 2])
      let mx = max(r, g, b), mn = min(r, g, b)
      let s = mx == 0 ? 0 : (mx - mn) * 255 / mx
      sat[i] = UInt8(s)
      lum[i] = UInt8((r + g + b) / 3)
      hist[s] += 1
    }
    // Modality: fluorescence has a dark background; brightfield a bright one.
    var lumHist = [Int](repeating: 0, count: 256)
    for v in lum { lumHist[Int(v)] += 1 }
    let medianLum = percentile(lumHist, n, 0.5)
    let brightBackground = percentile(lumHist, n, 0.9)
    var modality = Modality.brightfield
    var reason: String? = nil
    if medianLum < 90 && brightBackground < 160 {
      modality = .darkBackground
      reason = "dark background (median brightness \(medianLum)/255): looks like fluorescence, not brightfield H&E"
    }
    let otsu = otsuThreshold(hist, n)
    let thr = max(otsu, minSaturation)
    var mask = [UInt8](repeating: 0, count: n)
    if modality == .brightfield {
      for i in 0..<n where Int(sat[i]) > thr && Int(lum[i]) <= maxBrightness && lum[i] > 20 { mask[i] = 1 }
    } else {
      // Dark background: foreground is what is brighter than the background.
      let lt = max(otsuThreshold(lumHist, n), 10)
      for i in 0..<n where Int(lum[i]) > lt { mask[i] = 1 }
    }
    let w = img.width, h = img.height
    mask = dilate(mask, w, h)
    mask = erode(mask, w, h)
    mask = erode(mask, w, h)
    mask = dilate(mask, w, h)
    let minPixels = max(1, Int(minComponentArea / (micronsPerPixel * micronsPerPixel)))
    mask = removeSmallComponents(mask, w, h, minPixels: minPixels)
    let tissue = mask.reduce(0) { $0 + Int($1) }
    let frac = n == 0 ? 0 : Double(tissue) / Double(n)
    if modality == .brightfield && tissue > 0 {
      var s = 0, c = 0
      for i in 0..<n where mask[i] != 0 { s += Int(sat[i]); c += 1 }
      if s / max(c, 1) < 25 {
        modality = .unstained
        reason = "tissue has almost no colour: looks unstained or greyscale, not H&E"
      }
    }
    return TissueMask(
      width: w, height: h, mask: mask, downsampleX: downsampleX, downsampleY: downsampleY, tissueFraction: frac,
      threshold: thr, modality: modality, modalityReason: reason)
  }
}

func percentile(_ hist: [Int], _ n: Int, _ q: Double) -> Int {
  var acc = 0
  let target = Int(Double(n) * q)
  for (v, c) in hist.enumerated() {
    acc += c
    if acc > target { return v }
  }
  return 255
}

/// Otsu's threshold on a 256-bin histogram: the level that maximises between-class variance.
func otsuThreshold(_ hist: [Int], _ n: Int) -> Int {
  var sum = 0.0
  for (i, c) in hist.enumerated() { sum += Double(i * c) }
  var sumB = 0.0, wB = 0.0, best = 0.0, thr = 0
  for t in 0..<256 {
    wB += Double(hist[t])
    if wB == 0 { continue }
    let wF = Double(n) - wB
    if wF == 0 { break }
    sumB += Double(t * hist[t])
    let mB = sumB / wB, mF = (sum - sumB) / wF
    let between = wB * wF * (mB - mF) * (mB - mF)
    if between > best {
      best = between
      thr = t
    }
  }
  return thr
}

/// 3x3 binary dilation (H, W).
func dilate(_ m: [UInt8], _ w: Int, _ h: Int) -> [UInt8] {
  var o = [UInt8](repeating: 0, count: m.count)
  for y in 0..<h {
    for x in 0..<w {
      var v: UInt8 = 0
      for dy in -1...1 where y + dy >= 0 && y + dy < h {
        for dx in -1...1 where x + dx >= 0 && x + dx < w && m[(y + dy) * w + x + dx] != 0 { v = 1 }
      }
      o[y * w + x] = v
    }
  }
  return o
}

/// 3x3 binary erosion (H, W); pixels beyond the border count as set, so edges do not erode.
func erode(_ m: [UInt8], _ w: Int, _ h: Int) -> [UInt8] {
  var o = [UInt8](repeating: 0, count: m.count)
  for y in 0..<h {
    for x in 0..<w {
      var v: UInt8 = 1
      for dy in -1...1 where y + dy >= 0 && y + dy < h {
        for dx in -1...1 where x + dx >= 0 && x + dx < w && m[(y + dy) * w + x + dx] == 0 { v = 0 }
      }
      o[y * w + x] = v
    }
  }
  return o
}

/// Clears 4-connected components with fewer than `minPixels` pixels. Iterative flood fill.
func removeSmallComponents(_ m: [UInt8], _ w: Int, _ h: Int, minPixels: Int) -> [UInt8] {
  var out = m
  var seen = [Bool](repeating: false, count: m.count)
  var stack: [Int] = []
  var comp: [Int] = []
  for start in 0..<m.count where m[start] != 0 && !seen[start] {
    comp.removeAll(keepingCapacity: true)
    stack.append(start)
    seen[start] = true
    while let p = stack.popLast() {
      comp.append(p)
      let x = p % w, y = p / w
      if x > 0 && m[p - 1] != 0 && !seen[p - 1] { seen[p - 1] = true; stack.append(p - 1) }
      if x < w - 1 && m[p + 1] != 0 && !seen[p + 1] { seen[p + 1] = true; stack.append(p + 1) }
      if y > 0 && m[p - w] != 0 && !seen[p - w] { seen[p - w] = true; stack.append(p - w) }
      if y < h - 1 && m[p + w] != 0 && !seen[p + w] { seen[p + w] = true; stack.append(p + w) }
    }
    if comp.count < minPixels { for p in comp { out[p] = 0 } }
  }
  return out
}

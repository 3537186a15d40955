import Foundation

/// Per-output-pixel source taps for one axis of a separable resampling filter.
struct FilterTaps {
  var start: [Int32] = []  // first source index for each output pixel
  var count: [Int32] = []  // number of taps
  var weights: [Float] = []  // flattened, `maxTaps` per output pixel
  var maxTaps = 0

  /// Taps that map the source interval [origin, origin + extent) onto `outSize` pixels.
  /// Downscaling integrates the exact box footprint (area averaging); upscaling is bilinear.
  /// Source indices are clamped into [0, srcSize).
  init(origin: Double, extent: Double, outSize: Int, srcSize: Int) {
    let scale = extent / Double(outSize)
    if scale > 1 {
      maxTaps = Int(scale.rounded(.up)) + 2
    } else {
      maxTaps = 2
    }
    start = [Int32](repeating: 0, count: outSize)
    count = [Int32](repeating: 0, count: outSize)
    weights = [Float](repeating: 0, count: outSize * maxTaps)
    for o in 0..<outSize {
      var taps: [(Int, Double)] = []
      if scale > 1 {
        let a = origin + Double(o) * scale, b = a + scale
        var i = Int(a.rounded(.down))
        while Double(i) < b {
          let w = min(b, Double(i + 1)) - max(a, Double(i))
          if w > 1e-9 { taps.append((i, w)) }
          i += 1
        }
      } else {
        let c = origin + (Double(o) + 0.5) * scale - 0.5
        let i0 = Int(c.rounded(.down))
        let f = c - Double(i0)
        taps = [(i0, 1 - f), (i0 + 1, f)]
      }
      // Clamp into the source and merge duplicates so the taps stay contiguous.
      var lo = Int.max, hi = Int.min
      for (i, _) in taps {
        let ci = min(max(i, 0), srcSize - 1)
        lo = min(lo, ci)
        hi = max(hi, ci)
      }
      let n = hi - lo + 1
      precondition(n <= maxTaps)
      var total = 0.0
      for (_, w) in taps { total += w }
      for (i, w) in taps {
        let ci = min(max(i, 0), srcSize - 1)
        weights[o * maxTaps + (ci - lo)] += Float(w / total)
      }
      start[o] = Int32(lo)
      count[o] = Int32(n)
    }
  }
}

/// Resamples the source rectangle (`x`, `y`, `width`, `height`, in source pixels, fractional
/// allowed) to an `outWidth` x `outHeight` image. Area-averaging when shrinking, bilinear when
/// enlarging. O(out pixels * taps); allocates one float row buffer.
public func resample(
  _ src: RGBImage, x: Double = 0, y: Double = 0, width: Double? = nil, height: Double? = nil,
  outWidth: Int, outHeight: Int
) -> RGBImage {
  let w = width ?? Double(src.width), h = height ?? Double(src.height)
  precondition(outWidth > 0 && outHeight > 0 && src.width > 0 && src.height > 0)
  let tx = FilterTaps(origin: x, extent: w, outSize: outWidth, srcSize: src.width)
  let ty = FilterTaps(origin: y, extent: h, outSize: outHeight, srcSize: src.height)
  // Horizontal pass over the source rows that the vertical taps touch.
  let rowLo = Int(ty.start.min()!), rowHi = Int(zip(ty.start, ty.count).map { $0 + $1 }.max()!)
  let nRows = rowHi - rowLo
  var tmp = [Float](repeating: 0, count: nRows * outWidth * 3)
  src.pixels.withUnsafeBufferPointer { s in
    tmp.withUnsafeMutableBufferPointer { t in
      tx.weights.withUnsafeBufferPointer { wts in
        tx.start.withUnsafeBufferPointer { starts in
          tx.count.withUnsafeBufferPointer { counts in
            for r in 0..<nRows {
              let srow = s.baseAddress! + (rowLo + r) * src.width * 3
              let trow = t.baseAddress! + r * outWidth * 3
              for o in 0..<outWidth {
                var a0: Float = 0, a1: Float = 0, a2: Float = 0
                let n = Int(counts[o])
                let wp = wts.baseAddress! + o * tx.maxTaps
                var sp = srow + Int(starts[o]) * 3
                for k in 0..<n {
                  let wt = wp[k]
                  a0 += wt * Float(sp[0])
                  a1 += wt * Float(sp[1])
                  a2 += wt * Float(sp[2])
                  sp += 3
                }
                trow[3 * o] = a0
                trow[3 * o + 1] = a1
                trow[3 * o + 2] = a2
              }
            }
          }
        }
      }
    }
  }
  var out = RGBImage(width: outWidth, height: outHeight)
  let rowLen = outWidth * 3
  var acc = [Float](repeating: 0, count: rowLen)
  tmp.withUnsafeBufferPointer { t in
    out.pixels.withUnsafeMutableBufferPointer { d in
      acc.withUnsafeMutableBufferPointer { a in
        for o in 0..<outHeight {
          let st = Int(ty.start[o]) - rowLo, n = Int(ty.count[o]), wo = o * ty.maxTaps
          for c in 0..<rowLen { a[c] = 0 }
          for k in 0..<n {
            let wt = ty.weights[wo + k]
            let row = t.baseAddress! + (st + k) * rowLen
            for c in 0..<rowLen { a[c] += wt * row[c] }
          }
          let drow = d.baseAddress! + o * rowLen
          for c in 0..<rowLen { drow[c] = UInt8(max(0, min(255, a[c] + 0.5))) }
        }
      }
    }
  }
  return out
}

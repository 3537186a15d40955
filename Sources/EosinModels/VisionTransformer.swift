import EosinTensor
import EosinWeights
import Foundation

/// An image encoder: preprocessed pixels in, one feature row per image out.
public protocol ImageEncoder: Sendable {
  /// The side of the square input the encoder takes.
  var inputSize: Int { get }
  /// Width of one feature row.
  var featureDim: Int { get }
  /// pixels (B,3,S,S), preprocessed -> (B, featureDim), the family's standard embedding.
  func features(_ pixels: [Float], batch: Int) -> [Float]
}

/// How a vision transformer turns its tokens into one feature row.
public enum ViTPooling: String, Sendable {
  /// The class token after the final norm (timm `global_pool="token"`; `last_hidden_state[:, 0]`
  /// for transformers ViT and Dinov2).
  case classToken
  /// concat(class token, mean of the patch tokens), both after the final norm, register tokens
  /// left out (Virchow and Virchow2; timm `global_pool=""`).
  case classAndPatchMean
  /// Mean of the patch tokens, then `fc_norm` (timm `global_pool="avg"`).
  case patchMean
  /// CLIP: the class token through the post-norm and the projection, L2-normalised.
  case projected
  /// CoCa: an attentional pooler over the tokens, its first query through the post-norm and
  /// the projection, L2-normalised.
  case attentionalPool
}

/// Cross-attention from learned queries to the tokens (open_clip's `AttentionalPooler`, CoCa and
/// CONCH): `attn(ln_q(query), ln_k(x), ln_k(x))`. Only the first query feeds the embedding, so
/// only it is computed.
public struct AttentionalPooler: Sendable {
  var query: Tensor  // (NQ, D)
  var lnQ: LayerNorm
  var lnK: LayerNorm
  var q: Linear  // D -> D
  var k: Linear  // ctx -> D
  var v: Linear  // ctx -> D
  var out: Linear  // D -> D
  var heads: Int

  /// x (T, ctx) for one image -> (D), the first query's output.
  func firstQuery(_ x: UnsafePointer<Float>, _ T: Int) -> [Float] {
    let ctx = k.inFeatures, D = q.outFeatures, HS = D / heads
    let kin = lnK.forward(Array(UnsafeBufferPointer(start: x, count: T * ctx)), T)
    let qin = lnQ.forward(Array(query.data[0..<D]), 1)
    let qq = q.forward(qin, 1), kk = k.forward(kin, T), vv = v.forward(kin, T)
    var o = [Float](repeating: 0, count: D)
    let scale = 1 / Float(HS).squareRoot()
    var w = [Float](repeating: 0, count: T)
    for h in 0..<heads {
      var m = -Float.infinity
      for t in 0..<T {
        var s: Float = 0
        for i in 0..<HS { s += qq[h * HS + i] * kk[t * D + h * HS + i] }
        w[t] = s * scale
        m = max(m, w[t])
      }
      var z: Float = 0
      for t in 0..<T {
        w[t] = expf(w[t] - m)
        z += w[t]
      }
      for t in 0..<T {
        let a = w[t] / z
        for i in 0..<HS { o[h * HS + i] += a * vv[t * D + h * HS + i] }
      }
    }
    return out.forward(o, 1)
  }
}

/// One vision transformer for every published family: timm ViTs (LayerScale, register tokens,
/// SwiGLU, `no_embed_class`, dynamic image size), transformers `ViTModel`, `Dinov2Model` and
/// `CLIPVisionModel`, open_clip's ViT and CoCa image towers. The checkpoint names live in
/// ``VisionCheckpoint``; this type only runs the network.
///
/// Thread-safe: encoding only reads weights.
public struct VisionTransformer: ImageEncoder {
  /// Patch embedding as a matrix (C, 3*P*P) and its bias.
  var patchLinear: Linear
  var patch: Int
  var classToken: Tensor?
  /// (R, C) register tokens.
  var registers: Tensor?
  /// Position embeddings resampled once for ``inputSize``: prefix rows (for the class and
  /// register tokens that have one) then one row per patch.
  var positions: Tensor
  /// How many prefix tokens (class, then registers) have a position row.
  var positionedPrefix: Int
  var preNorm: LayerNorm?
  var blocks: [TransformerBlock]
  var finalNorm: LayerNorm?
  var fcNorm: LayerNorm?
  var pooler: AttentionalPooler?
  var projection: Linear?
  /// Eosin's tissue-statistics branch (``TissueBranch``), added to the projected class token.
  var tissue: TissueBranch?
  public let pooling: ViTPooling
  /// Whether the projected poolings (CLIP, CoCa) L2-normalise their output (their standard
  /// embedding); off for CLIP's raw projected features.
  public var normalizeOutput = true
  public let inputSize: Int
  public let width: Int

  /// The tokens before the patches: the class token and the registers.
  var prefix: Int { (classToken == nil ? 0 : 1) + (registers?.shape[0] ?? 0) }

  public var featureDim: Int {
    switch pooling {
    case .classAndPatchMean: return 2 * width
    case .projected, .attentionalPool: return projection?.outFeatures ?? width
    default: return width
    }
  }

  /// The same network with its GEMMs at `precision` (bf16: weights packed once here).
  public func converted(to precision: Precision) -> VisionTransformer {
    var v = self
    v.blocks = blocks.map { $0.converted(to: precision) }
    v.patchLinear = patchLinear.converted(to: precision)
    v.projection = projection?.converted(to: precision)
    return v
  }

  /// pixels (B,3,S,S) -> (B, featureDim); one image per core when B > 1.
  public func features(_ pixels: [Float], batch B: Int) -> [Float] {
    let S = inputSize, per = 3 * S * S, D = featureDim
    precondition(pixels.count == B * per, "pixels must be (B,3,\(S),\(S))")
    if B == 1 { return pixels.withUnsafeBufferPointer { encode($0.baseAddress!) } }
    let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: B * D)
    defer { out.deallocate() }
    pixels.withUnsafeBufferPointer { px in
      parallelFor(B) { b in
        let f = encode(px.baseAddress! + b * per)
        for i in 0..<D { out[b * D + i] = f[i] }
      }
    }
    return Array(out)
  }

  /// Width of ``featuresAndBackbone(_:batch:)``'s backbone row: the pooled class token and the
  /// patch-token mean.
  public var backboneDim: Int { 2 * width }

  /// The family's feature rows and, for each image, a backbone row (2 x width): the class token
  /// after the final norm and before any projection (zeros without a class token), then the mean
  /// of the patch tokens leaving the last block (registers left out). Out-of-domain checks use
  /// the backbone row: it keeps what a projection trained for the text side throws away.
  public func featuresAndBackbone(_ pixels: [Float], batch B: Int) -> (features: [Float], backbone: [Float]) {
    let S = inputSize, per = 3 * S * S, D = featureDim, E = backboneDim
    precondition(pixels.count == B * per, "pixels must be (B,3,\(S),\(S))")
    let out = UnsafeMutableBufferPointer<Float>.allocate(capacity: B * D)
    let bb = UnsafeMutableBufferPointer<Float>.allocate(capacity: B * E)
    defer {
      out.deallocate()
      bb.deallocate()
    }
    pixels.withUnsafeBufferPointer { px in
      parallelFor(B) { b in
        let f = encode(px.baseAddress! + b * per, backbone: bb.baseAddress! + b * E)
        for i in 0..<D { out[b * D + i] = f[i] }
      }
    }
    return (Array(out), Array(bb))
  }

  /// The inputs of the projected pooling's linear maps, for each image: the class token after
  /// the final norm (B, width) and, with a ``TissueBranch``, its standardised statistics
  /// (B, ``TissueFeatures/count``; empty without one). Head alignment fits the maps on them.
  public func projectionInputs(_ pixels: [Float], batch B: Int) -> (pooled: [Float], tissue: [Float]) {
    let C = width, E = backboneDim
    let (bb, tissue) = backboneAndTissue(pixels, batch: B)
    var pooled = [Float](repeating: 0, count: B * C)
    for b in 0..<B { for i in 0..<C { pooled[b * C + i] = bb[b * E + i] } }
    return (pooled, tissue)
  }

  /// For each image: its backbone row (B, ``backboneDim``; see
  /// ``featuresAndBackbone(_:batch:)``) and, with a ``TissueBranch``, its standardised tissue
  /// statistics (B, ``TissueFeatures/count``; empty without one), in one pass of the tower.
  public func backboneAndTissue(_ pixels: [Float], batch B: Int) -> (backbone: [Float], tissue: [Float]) {
    var plain = self
    plain.tissue = nil  // the statistics are computed once, below
    return (plain.featuresAndBackbone(pixels, batch: B).backbone, tissue?.inputs(batch: pixels, B, size: inputSize) ?? [])
  }

  /// B images (3,S,S) -> their tokens (B,T,C) before any norm: class token, registers, then the
  /// patches, each with its position. `cols` and `pe` are scratch (kept by training's tape).
  func embed(_ px: UnsafePointer<Float>, _ B: Int, cols: inout [Float], pe: inout [Float]) -> [Float] {
    let S = inputSize, P = patch, G = S / P, NP = G * G, C = width, K = 3 * P * P
    let R = registers?.shape[0] ?? 0, NPre = prefix, T = NPre + NP
    buf(&cols, B * NP * K)
    cols.withUnsafeMutableBufferPointer { c in
      for b in 0..<B { im2col(px + b * 3 * S * S, c.baseAddress! + b * NP * K, S, P) }
    }
    buf(&pe, B * NP * C)
    patchLinear.forward(into: &pe, cols, B * NP)
    var x = [Float](repeating: 0, count: B * T * C)
    let pos = positions.data
    for b in 0..<B {
      let base = b * T * C
      var row = 0
      if let c = classToken {
        for i in 0..<C { x[base + i] = c.data[i] + (positionedPrefix >= 1 ? pos[i] : 0) }
        row = 1
      }
      if let r = registers {
        let has = positionedPrefix == NPre
        for j in 0..<R {
          for i in 0..<C { x[base + (row + j) * C + i] = r.data[j * C + i] + (has ? pos[(row + j) * C + i] : 0) }
        }
      }
      for p in 0..<NP {
        let dst = base + (NPre + p) * C, src = (b * NP + p) * C, prow = (positionedPrefix + p) * C
        for i in 0..<C { x[dst + i] = pe[src + i] + pos[prow + i] }
      }
    }
    return x
  }

  /// One image (3,S,S) -> its feature row; with `backbone`, also its backbone row (see
  /// ``featuresAndBackbone(_:batch:)``) written there.
  func encode(_ px: UnsafePointer<Float>, backbone: UnsafeMutablePointer<Float>? = nil) -> [Float] {
    let NP = (inputSize / patch) * (inputSize / patch), C = width, NPre = prefix, T = NPre + NP
    var cols: [Float] = [], pe: [Float] = []
    var x = embed(px, 1, cols: &cols, pe: &pe)
    if let n = preNorm { x = n.forward(x, T) }
    for b in blocks { b.forward(&x, B: 1, T: T, causal: false) }
    if let bb = backbone {
      let cls = classToken == nil ? [Float](repeating: 0, count: C) : Array(x[0..<C])
      let pooled = classToken == nil ? cls : (finalNorm.map { $0.forward(cls, 1) } ?? cls)
      for i in 0..<C { bb[i] = pooled[i] }
      for i in 0..<C { bb[C + i] = 0 }
      for t in NPre..<T { for i in 0..<C { bb[C + i] += x[t * C + i] } }
      for i in 0..<C { bb[C + i] /= Float(NP) }
    }
    switch pooling {
    case .classToken:
      let cls = Array(x[0..<C])
      return finalNorm.map { $0.forward(cls, 1) } ?? cls
    case .classAndPatchMean:
      let y = finalNorm.map { $0.forward(x, T) } ?? x
      var f = Array(y[0..<C]) + [Float](repeating: 0, count: C)
      for t in NPre..<T { for i in 0..<C { f[C + i] += y[t * C + i] } }
      for i in 0..<C { f[C + i] /= Float(NP) }
      return f
    case .patchMean:
      let y = finalNorm.map { $0.forward(x, T) } ?? x
      var f = [Float](repeating: 0, count: C)
      for t in NPre..<T { for i in 0..<C { f[i] += y[t * C + i] } }
      for i in 0..<C { f[i] /= Float(NP) }
      return fcNorm.map { $0.forward(f, 1) } ?? f
    case .projected:
      var f = finalNorm.map { $0.forward(Array(x[0..<C]), 1) } ?? Array(x[0..<C])
      if let p = projection { f = p.forward(f, 1) }
      if let t = tissue {
        let extra = t.projection.forward(t.inputs(px, size: inputSize), 1)
        for i in f.indices { f[i] += extra[i] }
      }
      return normalizeOutput ? VisionTransformer.normalized(f) : f
    case .attentionalPool:
      var f = x.withUnsafeBufferPointer { pooler!.firstQuery($0.baseAddress!, T) }
      if let n = finalNorm { f = n.forward(f, 1) }
      if let p = projection { f = p.forward(f, 1) }
      return normalizeOutput ? VisionTransformer.normalized(f) : f
    }
  }

  static func normalized(_ f: [Float]) -> [Float] {
    var n: Float = 0
    for v in f { n += v * v }
    let s = 1 / max(n.squareRoot(), 1e-12)
    return f.map { $0 * s }
  }
}

/// Patches of one image (3,S,S) as rows (NP, 3*P*P) in (channel, row, column) order, matching a
/// conv weight (C, 3, P, P) flattened.
func im2col(_ px: UnsafePointer<Float>, _ cols: UnsafeMutablePointer<Float>, _ S: Int, _ P: Int) {
  let G = S / P, K = 3 * P * P
  for gy in 0..<G {
    for gx in 0..<G {
      let row = cols + (gy * G + gx) * K
      var k = 0
      for ch in 0..<3 {
        for py in 0..<P {
          let src = px + ch * S * S + (gy * P + py) * S + gx * P
          for q in 0..<P { row[k + q] = src[q] }
          k += P
        }
      }
    }
  }
}

/// Position-embedding resampling as PyTorch's `F.interpolate(mode="bicubic", align_corners=False)`
/// computes it, with or without `antialias` (timm resamples with antialias, transformers' Dinov2
/// without). Separable: one weight matrix per axis.
public enum PositionResampler {
  /// grid (gh, gw, C) -> (nh, nw, C).
  public static func resample(_ grid: [Float], from gh: Int, _ gw: Int, to nh: Int, _ nw: Int, channels C: Int, antialias: Bool)
    -> [Float]
  {
    let wy = weights(gh, nh, antialias), wx = weights(gw, nw, antialias)
    // Rows first: (gh, gw, C) -> (nh, gw, C), then columns.
    var tmp = [Float](repeating: 0, count: nh * gw * C)
    for o in 0..<nh {
      for (i, w) in wy[o] {
        for x in 0..<gw { for c in 0..<C { tmp[(o * gw + x) * C + c] += w * grid[(i * gw + x) * C + c] } }
      }
    }
    var out = [Float](repeating: 0, count: nh * nw * C)
    for y in 0..<nh {
      for o in 0..<nw {
        for (i, w) in wx[o] { for c in 0..<C { out[(y * nw + o) * C + c] += w * tmp[(y * gw + i) * C + c] } }
      }
    }
    return out
  }

  /// For each output index, the (input index, weight) taps along one axis.
  static func weights(_ inSize: Int, _ outSize: Int, _ antialias: Bool) -> [[(Int, Float)]] {
    let scale = Double(inSize) / Double(outSize)
    if antialias {
      // PyTorch's separable anti-aliased kernel (the PIL one): cubic with a = -0.5, widened by
      // the scale when shrinking, normalised over the taps inside the input.
      func filter(_ x0: Double) -> Double {
        let a = -0.5, x = abs(x0)
        if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
        if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
        return 0
      }
      let support = scale >= 1 ? 2 * scale : 2.0
      let inv = scale >= 1 ? 1 / scale : 1.0
      return (0..<outSize).map { i in
        let center = scale * (Double(i) + 0.5)
        let lo = max(Int(center - support + 0.5), 0)
        let hi = min(Int(center + support + 0.5), inSize)
        var taps: [(Int, Double)] = []
        var total = 0.0
        for j in lo..<max(lo, hi) {
          let w = filter((Double(j) - center + 0.5) * inv)
          taps.append((j, w))
          total += w
        }
        return taps.map { ($0.0, Float(total != 0 ? $0.1 / total : 0)) }
      }
    }
    // Plain bicubic convolution (a = -0.75), indices clamped at the border.
    let A = -0.75
    func cubic1(_ x: Double) -> Double { ((A + 2) * x - (A + 3)) * x * x + 1 }
    func cubic2(_ x: Double) -> Double { ((A * x - 5 * A) * x + 8 * A) * x - 4 * A }
    return (0..<outSize).map { o in
      let src = (Double(o) + 0.5) * scale - 0.5
      let i0 = Int(src.rounded(.down))
      let t = src - Double(i0)
      let w = [cubic2(t + 1), cubic1(t), cubic1(1 - t), cubic2(2 - t)]
      var acc: [Int: Float] = [:]
      for k in 0..<4 {
        let i = min(max(i0 - 1 + k, 0), inSize - 1)
        acc[i, default: 0] += Float(w[k])
      }
      return acc.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }
  }
}

/// The shape of a vision transformer, for benchmarks with random weights at real sizes.
public struct ViTShape: Sendable {
  public var width: Int
  public var depth: Int
  public var heads: Int
  public var patch: Int
  public var inputSize: Int
  /// fc1's output width (for a gated MLP: both halves).
  public var mlpHidden: Int
  public var glu = false
  public var act: Activation = .gelu
  public var registers = 0
  public var layerScale = false
  /// CLIP image tower: pre-norm, projection to this width (0: none).
  public var projection = 0

  /// Named shapes: `vit-b-16` (CLIP ViT-B/16, the existing benchmark), `vit-b-32`, `vit-s-16`,
  /// `vit-t-16`, `vit-l-16` (UNI), `vit-h-14-swiglu` (Virchow2), `vit-g-14-swiglu` (UNI2-h).
  public static func named(_ n: String) -> ViTShape? {
    switch n {
    case "vit-b-16":
      return ViTShape(
        width: 768, depth: 12, heads: 12, patch: 16, inputSize: 224, mlpHidden: 3072, act: .quickGelu, projection: 512)
    case "vit-b-32":
      return ViTShape(
        width: 768, depth: 12, heads: 12, patch: 32, inputSize: 224, mlpHidden: 3072, act: .quickGelu, projection: 512)
    case "vit-s-16":
      return ViTShape(
        width: 384, depth: 12, heads: 6, patch: 16, inputSize: 224, mlpHidden: 1536, act: .quickGelu, projection: 512)
    case "vit-t-16":
      return ViTShape(
        width: 192, depth: 12, heads: 3, patch: 16, inputSize: 224, mlpHidden: 768, act: .quickGelu, projection: 512)
    case "vit-l-16":
      return ViTShape(width: 1024, depth: 24, heads: 16, patch: 16, inputSize: 224, mlpHidden: 4096, layerScale: true)
    case "vit-h-14-swiglu":
      return ViTShape(
        width: 1280, depth: 32, heads: 16, patch: 14, inputSize: 224, mlpHidden: 6832, glu: true, act: .silu, registers: 4,
        layerScale: true)
    case "vit-g-14-swiglu":
      return ViTShape(
        width: 1536, depth: 24, heads: 24, patch: 14, inputSize: 224, mlpHidden: 8192, glu: true, act: .silu, registers: 8,
        layerScale: true)
    default: return nil
    }
  }

  /// Tokens per image: class, registers, patches.
  public var tokens: Int { 1 + registers + (inputSize / patch) * (inputSize / patch) }

  /// Forward FLOPs for one image (2 per multiply-add): patch embedding, blocks, projection.
  public var flops: Double {
    let T = Double(tokens), C = Double(width), H = Double(mlpHidden), NP = Double((inputSize / patch) * (inputSize / patch))
    let mlp = 2 * T * C * H + 2 * T * (glu ? H / 2 : H) * C
    let perLayer = 2 * T * C * 3 * C + 2 * 2 * T * T * C + 2 * T * C * C + mlp
    return 2 * NP * Double(3 * patch * patch) * C + Double(depth) * perLayer + 2 * C * Double(projection)
  }
}

extension VisionTransformer {
  /// Random weights (deterministic for `seed`) at `shape`, for benchmarks.
  public init(random shape: ViTShape, seed: UInt64 = 1) throws {
    var t = RandomTensors(seed: seed)
    let C = shape.width, P = shape.patch, G = shape.inputSize / P
    try self.init(
      width: C, patch: P, inputSize: shape.inputSize, pooling: shape.projection > 0 ? .projected : .classToken,
      antialias: false, patch: (try t.take("patch.weight", [C, 3, P, P]), nil), classToken: try t.take("cls", [C]),
      registers: shape.registers > 0 ? try t.take("reg", [shape.registers, C]) : nil,
      positions: try t.take("pos", [1 + shape.registers + G * G, C]), positionedPrefix: 1 + shape.registers, file: "random")
    if shape.projection > 0 { preNorm = try LayerNorm.load(&t, "pre_norm", C, eps: 1e-5) }
    blocks = try (0..<shape.depth).map { i in
      let p = "blocks.\(i)"
      var b = TransformerBlock(
        ln1: try LayerNorm.load(&t, p + ".norm1", C, eps: 1e-6), qkv: try Linear.load(&t, p + ".qkv", C, 3 * C),
        proj: try Linear.load(&t, p + ".proj", C, C), ln2: try LayerNorm.load(&t, p + ".norm2", C, eps: 1e-6),
        fc1: try Linear.load(&t, p + ".fc1", C, shape.mlpHidden),
        fc2: try Linear.load(&t, p + ".fc2", shape.glu ? shape.mlpHidden / 2 : shape.mlpHidden, C), act: shape.act,
        heads: shape.heads)
      b.glu = shape.glu
      if shape.layerScale {
        b.ls1 = Tensor(shape: [C], data: [Float](repeating: 0.1, count: C))
        b.ls2 = b.ls1
      }
      return b
    }
    finalNorm = try LayerNorm.load(&t, "norm", C, eps: 1e-6)
    if shape.projection > 0 { projection = try Linear.load(&t, "proj", C, shape.projection, bias: false) }
  }
}

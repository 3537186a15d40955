import Foundation

/// A review flag with its reason in plain words.
public struct ReviewFlag: Codable, Equatable, Sendable {
  public var code: String
  public var reason: String
}

/// Everything known about how far to trust one output.
public struct Confidence: Codable, Sendable {
  /// Calibrated probability of the verdict.
  public var probability: Float
  /// Verdict minus runner-up probability.
  public var margin: Float
  /// Spread of the verdict's probability across templates.
  public var promptSpread: Float
  /// Best similarity to any class, or to the tissue prompts.
  public var domain: Float
  /// Share of the slide that is tissue (nil for standalone images).
  public var tissueFraction: Double?
  /// Generator's mean probability over the answer's content tokens (chat and reports).
  public var generator: Float?
  /// Whether generated text agrees with the classifier (nil when not checked).
  public var consistent: Bool?
  /// Distance to the training embeddings (for a slide: mean over the evidence tiles); nil
  /// when the weights have no ``OutlierModel``.
  public var outlier: Float?

  public init(
    probability: Float, margin: Float, promptSpread: Float, domain: Float, tissueFraction: Double? = nil, generator: Float? = nil,
    consistent: Bool? = nil
  ) {
    self.probability = probability
    self.margin = margin
    self.promptSpread = promptSpread
    self.domain = domain
    self.tissueFraction = tissueFraction
    self.generator = generator
    self.consistent = consistent
  }
}

/// Facts about the input that bear on review, independent of the model's scores.
public struct InputFacts: Sendable {
  public var mppMissing = false
  public var notBrightfield: String? = nil
  public var tissueFraction: Double? = nil
  public init(mppMissing: Bool = false, notBrightfield: String? = nil, tissueFraction: Double? = nil) {
    self.mppMissing = mppMissing
    self.notBrightfield = notBrightfield
    self.tissueFraction = tissueFraction
  }
}

/// Turns a confidence and the input's facts into review flags, each with a reason. Thresholds
/// come from the weights manifest (fitted on validation data). The goal is high accuracy on the
/// outputs that are not flagged.
public struct ReviewPolicy: Sendable {
  public var thresholds: ReviewThresholds
  public init(thresholds: ReviewThresholds) { self.thresholds = thresholds }

  /// - Parameter slide: the confidence is a slide verdict's (the outlier check then uses the
  ///   slide threshold, fitted on means over several tiles).
  public func flags(_ c: Confidence, verdict: String, runnerUp: String?, facts: InputFacts, slide: Bool = false) -> [ReviewFlag] {
    var f: [ReviewFlag] = []
    let t = thresholds
    if let d = c.outlier, let limit = slide ? t.maxSlideOutlierDistance : t.maxOutlierDistance, d > limit {
      f.append(
        .init(
          code: "out-of-domain",
          reason: String(format: "the tissue lies far from the training tiles (distance %.1f, limit %.1f)", d, limit)))
    }
    if c.probability < t.minProbability {
      f.append(
        .init(code: "low-probability", reason: String(format: "probability %.2f is below %.2f", c.probability, t.minProbability)))
    }
    if c.margin < t.minMargin, let r = runnerUp {
      f.append(.init(code: "small-margin", reason: String(format: "%@ vs %@ differ by only %.2f", verdict, r, c.margin)))
    }
    if c.promptSpread > t.maxPromptSpread {
      f.append(
        .init(
          code: "prompt-sensitive",
          reason: String(format: "the verdict changes with the wording of the prompt (spread %.2f)", c.promptSpread)))
    }
    if c.domain < t.minDomainSimilarity {
      f.append(
        .init(code: "out-of-domain", reason: String(format: "the image looks unlike every class (similarity %.2f)", c.domain)))
    }
    if let tf = facts.tissueFraction ?? c.tissueFraction, tf < t.minTissueFraction {
      f.append(.init(code: "little-tissue", reason: String(format: "only %.1f%% of the slide is tissue", tf * 100)))
    }
    if facts.mppMissing {
      f.append(.init(code: "no-mpp", reason: "the slide records no microns-per-pixel; the resolution was assumed"))
    }
    if let nb = facts.notBrightfield { f.append(.init(code: "not-he", reason: "not brightfield H&E: \(nb)")) }
    if c.consistent == false { f.append(.init(code: "inconsistent", reason: "answer disagrees with the classifier")) }
    if let g = c.generator, g < 0.5 {
      f.append(
        .init(code: "unsure-generator", reason: String(format: "the answer's wording is uncertain (token probability %.2f)", g)))
    }
    return f
  }
}

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
  /// The mpp the user gave for a slide that records none (`--mpp`, a manifest's column).
  public var mppGiven: Double? = nil
  public var notBrightfield: String? = nil
  public var tissueFraction: Double? = nil
  public init(mppMissing: Bool = false, notBrightfield: String? = nil, tissueFraction: Double? = nil) {
    self.mppMissing = mppMissing
    self.notBrightfield = notBrightfield
    self.tissueFraction = tissueFraction
  }
}

/// The one review policy: turns a confidence and the input's facts into review flags, each with
/// a reason. Thresholds come from the weights manifest (fitted on validation data). The goal is
/// high accuracy on the outputs that are not flagged.
///
/// Every output takes its flags from here: slide verdicts (``SlidePooling``), each tile of a
/// slide and each standalone image (``tileFlags(_:classifier:facts:)``, shown in the table,
/// CSV, JSON, GeoJSON and heatmaps alike), report fields (plus ``contradictions(_:)`` across
/// fields) and chat answers (plus the claim checks). A tile therefore carries the same flag in
/// every file it appears in.
public struct ReviewPolicy: Sendable {
  public var thresholds: ReviewThresholds
  public init(thresholds: ReviewThresholds) { self.thresholds = thresholds }

  /// - Parameters:
  ///   - slide: the confidence is a slide verdict's (the outlier check then uses the slide
  ///     threshold, fitted on means over several tiles).
  ///   - set: the prompt set of the verdict, for its own probability threshold when one was fitted.
  public func flags(
    _ c: Confidence, verdict: String, runnerUp: String?, facts: InputFacts, slide: Bool = false, set: PromptSet? = nil
  ) -> [ReviewFlag] {
    var f: [ReviewFlag] = []
    let t = thresholds
    let finite = [c.probability, c.margin, c.promptSpread, c.domain, c.outlier ?? 0, c.generator ?? 0].allSatisfy(\.isFinite)
    if !finite {
      // NaN compares false with every threshold: without this check it would pass them all.
      f.append(
        .init(code: "non-finite", reason: "the model produced a non-finite score (NaN or infinity); the weights may be damaged"))
    }
    if let d = c.outlier, let limit = slide ? t.maxSlideOutlierDistance : t.maxOutlierDistance, d > limit {
      f.append(
        .init(
          code: "out-of-domain",
          reason: String(format: "the tissue lies far from the training tiles (distance %.1f, limit %.1f)", d, limit)))
    }
    let minP = t.minProbability(for: set)
    if c.probability < minP {
      f.append(
        .init(
          code: "low-probability",
          reason: minP > 1
            ? String(
              format:
                "probability %.2f, but no probability is enough for this prompt set: on validation tiles no threshold reached the target accuracy, so every verdict is flagged",
              c.probability)
            : String(format: "probability %.2f is below %.2f", c.probability, minP)))
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
      f.append(
        .init(
          code: "no-mpp",
          reason: facts.mppGiven.map { String(format: "the slide records no microns-per-pixel; %.3f µm/px was given", $0) }
            ?? "the slide records no microns-per-pixel; the resolution was assumed"))
    }
    if let nb = facts.notBrightfield { f.append(.init(code: "not-he", reason: "not brightfield H&E: \(nb)")) }
    if c.consistent == false { f.append(.init(code: "inconsistent", reason: "answer disagrees with the classifier")) }
    if let g = c.generator, g < 0.5 {
      f.append(
        .init(code: "unsure-generator", reason: String(format: "the answer's wording is uncertain (token probability %.2f)", g)))
    }
    return f
  }

  /// Flags for one tile of a slide, or one standalone image. The input's facts (no mpp, not
  /// H&E) apply to each of its tiles; the slide's tissue share does not.
  public func tileFlags(_ p: TilePrediction, classifier: ZeroShotClassifier, facts: InputFacts = InputFacts()) -> [ReviewFlag] {
    let order = p.probs.indices.sorted { p.probs[$0] > p.probs[$1] }
    let bg = p.top == classifier.backgroundIndex
    var conf = Confidence(probability: p.probs[p.top], margin: p.margin, promptSpread: p.promptSpread, domain: p.domain)
    if !bg { conf.outlier = p.outlier }
    var tf = facts
    tf.tissueFraction = nil
    var f = flags(
      conf, verdict: classifier.classNames[p.top], runnerUp: order.count > 1 ? classifier.classNames[order[1]] : nil, facts: tf,
      set: classifier.promptSet)
    if bg { f.append(ReviewFlag(code: "no-tissue", reason: "no interpretable tissue")) }
    f += caveats(classifier.classNames[p.top], classifier)
    return f
  }

  /// The class-support flag for a verdict of `classifier` (see ``ClassSupport``).
  public func support(_ className: String, _ classifier: ZeroShotClassifier) -> ReviewFlag? {
    ClassSupport.flag(className: className, set: classifier.promptSet, trainedOrgans: thresholds.trainedOrgans)
  }

  /// The flag for every verdict of a classifier whose prompt phrases were read as written while
  /// the weights' temperature and thresholds were fitted with them read through a language model
  /// (``ZeroShotClassifier/unreadPhrases``): its probabilities are not the ones those
  /// thresholds were fitted on, so passing them proves nothing.
  public func wording(_ classifier: ZeroShotClassifier) -> ReviewFlag? {
    guard let first = classifier.unreadPhrases.first, let entry = classifier.bundle.manifest.wording else { return nil }
    let n = classifier.unreadPhrases.count
    let more = n > 1 ? " and \(n - 1) more" : ""
    return ReviewFlag(
      code: "wording-not-read",
      reason:
        "the prompt phrases of the \(classifier.promptSet.name) set that this model was not trained on (\"\(first)\"\(more)) were read as written, but its review thresholds were fitted with them read through \(entry.model), which this run does not use (fetch it with `eosin models fetch`; leave out `--wording as-written`)"
    )
  }

  /// What the model itself cannot vouch for in a verdict of `classifier`: the class-support
  /// flag and the wording flag, each when it applies.
  public func caveats(_ className: String, _ classifier: ZeroShotClassifier) -> [ReviewFlag] {
    [support(className, classifier), wording(classifier)].compactMap { $0 }
  }

  /// Fields of one report (or turns of one chat) that contradict each other: a field whose class
  /// is malignant beside one whose class is benign. Returns, per input index, the flag to add;
  /// each flag names both fields. Inputs are (field name, the class it asserts or nil).
  public static func contradictions(_ fields: [(name: String, className: String?)]) -> [Int: ReviewFlag] {
    var out: [Int: ReviewFlag] = [:]
    let pol = fields.map { $0.className.flatMap { ClaimGate.polarity(ofClass: $0) } }
    for i in fields.indices {
      guard let pi = pol[i] else { continue }
      for j in fields.indices where j != i {
        guard let pj = pol[j], pj != pi else { continue }
        out[i] = ReviewFlag(
          code: "contradiction",
          reason: "\(fields[i].name) says \(fields[i].className!) but \(fields[j].name) says \(fields[j].className!)")
        break
      }
    }
    return out
  }
}

/// The organ check of the review policy. A joint classifier over every organ set's classes
/// (lung, colorectal, ...; their similarities are comparable, unlike probabilities normalised
/// within each set) says which organ the tissue looks like and what it looks like there. Then:
/// - a verdict from a set about one organ, on tissue that looks like another organ, is flagged:
///   that set's classes do not apply to it, however confident its verdict;
/// - a benign or malignant verdict from a set about no organ (malignancy) that the organ
///   classifier contradicts (it sees a benign class where the set says malignant, or the
///   reverse) is flagged: two classifiers disagree.
/// Each tile is checked by its own look, a slide by the joint classifier's pooled verdict.
public final class OrganCheck: @unchecked Sendable {
  /// The organ sets, in the order their classes appear in the joint set.
  public let organSets: [PromptSet]
  let joint: ZeroShotClassifier
  /// For each joint class index, the organ it belongs to (nil: the background class).
  let owner: [String?]

  /// nil when fewer than two organ sets are given (nothing to tell apart).
  public init?(organSets sets: [PromptSet], bundle: ModelBundle, cacheDir: String?) throws {
    // Only organs the model was trained on compete: it has no notion of the others.
    let trained = bundle.thresholds.trainedOrgans
    let organ = sets.filter { s in
      !(s.organWords ?? []).isEmpty && (trained.map { t in s.organName.map { t.contains($0) } ?? false } ?? true)
    }
    guard organ.count >= 2, let first = organ.first else { return nil }
    organSets = organ
    let set = try PromptSet(
      name: "organ-choice(" + organ.map(\.name).joined(separator: "+") + ")", classes: organ.flatMap { $0.classes },
      templates: first.templates, background: first.background)
    joint = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cacheDir)
    owner = organ.flatMap { s in s.classes.map { _ in s.organName } } + (set.background == nil ? [] : [nil])
  }

  /// What each tile looks like to the joint classifier: its organ (nil: background) and class.
  public func organs(_ embeddings: [Float]) -> [(organ: String?, className: String)] {
    joint.predict(embeddings).map { (owner[$0.top], joint.classNames[$0.top]) }
  }

  /// The flag for `verdict` of `set` on tissue that looks like `found`, nil when they agree.
  public func flag(set: PromptSet, verdict: String, found: (organ: String?, className: String)) -> ReviewFlag? {
    guard let f = found.organ else { return nil }
    if let o = set.organName {
      // An organ the joint classifier does not know is the class-support check's to flag.
      guard f != o, organSets.contains(where: { $0.organName == o }) else { return nil }
      return ReviewFlag(
        code: "organ-mismatch",
        reason: "the tissue looks like \(f) (\(found.className)), not \(o): the \(set.name) classes do not apply")
    }
    guard let pv = ClaimGate.polarity(ofClass: verdict), let pf = ClaimGate.polarity(ofClass: found.className), pv != pf else {
      return nil
    }
    return ReviewFlag(
      code: "classifiers-disagree",
      reason: "\(set.name) says \(verdict), but the organ classifier sees \(found.className) (\(pf ? "malignant" : "benign"))")
  }

  /// Adds the organ flags to a slide result of `set`.
  public func apply(to r: inout SlideResult, set: PromptSet, input: AnalyzedSlide, policy: ReviewPolicy) {
    guard set.name != joint.promptSet.name else { return }
    let e = input.embeddings
    let per = organs(e.embeddings)
    for i in r.tileFlags.indices where i < per.count {
      let v = r.classNames[r.tiles[i].top]
      if r.tiles[i].top != r.classNames.count - 1 || set.background == nil,
        let f = flag(set: set, verdict: v, found: per[i])
      {
        r.tileFlags[i].append(f)
      }
    }
    let pooled = input.classify(joint, policy: policy)
    if let f = flag(
      set: set, verdict: r.classNames[r.verdict], found: (owner[pooled.verdict], pooled.classNames[pooled.verdict]))
    {
      r.flags.append(f)
    }
  }
}

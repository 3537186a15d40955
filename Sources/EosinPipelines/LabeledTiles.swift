import EosinSlide
import EosinTokenizer
import Foundation

/// A folder of labelled tiles: class subfolders, or a `manifest.csv` with `path,label[,group]`.
public enum LabeledTiles {
  public struct Item: Sendable {
    public var path: String
    public var label: String
    public var group: String
  }

  /// - Throws: ``PipelineError`` for a missing or empty folder or a malformed manifest.
  public static func load(_ dir: String) throws -> [Item] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
      throw PipelineError.file(path: dir, message: "not a folder of labelled tiles")
    }
    let man = dir + "/manifest.csv"
    var items: [Item] = []
    if FileManager.default.fileExists(atPath: man) {
      let rows: [[String]]
      do {
        rows = try CSV.parse(String(decoding: FileManager.default.contents(atPath: man) ?? Data(), as: UTF8.self), path: man)
      } catch {
        throw PipelineError.file(path: man, message: error.localizedDescription)
      }
      guard let h = rows.first, let pi = h.firstIndex(of: "path"), let li = h.firstIndex(of: "label") else {
        throw PipelineError.file(path: man, message: "header must have path and label columns")
      }
      let gi = h.firstIndex(of: "group") ?? h.firstIndex(of: "case_id")
      for r in rows.dropFirst() where r.count > max(pi, li) {
        items.append(
          Item(
            path: (dir as NSString).appendingPathComponent(r[pi]), label: r[li],
            group: gi.flatMap { r.count > $0 ? r[$0] : nil } ?? r[pi]))
      }
    } else {
      for sub in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
        let sd = (dir as NSString).appendingPathComponent(sub)
        var d: ObjCBool = false
        guard FileManager.default.fileExists(atPath: sd, isDirectory: &d), d.boolValue else { continue }
        for f in ((try? FileManager.default.contentsOfDirectory(atPath: sd)) ?? []).sorted()
        where InputCollector.imageExtensions.contains((f as NSString).pathExtension.lowercased()) {
          items.append(Item(path: (sd as NSString).appendingPathComponent(f), label: sub, group: f))
        }
      }
    }
    guard !items.isEmpty else {
      throw PipelineError.file(path: dir, message: "no labelled tiles (expected class subfolders or manifest.csv)")
    }
    return items
  }

  /// Maps dataset labels to prompt-set classes: an exact name or synonym match; else through the
  /// knowledge notes (a class whose dataset_label is the label, by its name and synonyms, then by
  /// its coarse group appearing in a class name); else an explicit `overrides` entry.
  /// - Throws: ``PipelineError/input`` listing the labels that match no class.
  public static func mapLabels(
    _ labels: Set<String>, to set: PromptSet, knowledge: [[String: Any]], overrides: [String: String] = [:]
  ) throws -> [String: Int] {
    let classes = set.allClasses
    func find(_ phrase: String) -> Int? {
      let p = phrase.lowercased()
      return classes.firstIndex { c in c.phrases.contains { $0.lowercased() == p } }
    }
    var out: [String: Int] = [:]
    var missing: [String] = []
    for l in labels.sorted() {
      if let o = overrides[l], let k = find(o) {
        out[l] = k
        continue
      }
      if let k = find(l) {
        out[l] = k
        continue
      }
      var hit: Int? = nil
      if let kc = knowledge.first(where: { ($0["dataset_label"] as? String) == l }) {
        let phrases = [kc["name"] as? String].compactMap { $0 } + ((kc["synonyms"] as? [String]) ?? [])
        hit = phrases.lazy.compactMap { find($0) }.first
        if hit == nil, let coarse = kc["coarse"] as? String {
          hit = classes.firstIndex { $0.name.lowercased().contains(coarse.lowercased()) }
        }
      }
      if let h = hit { out[l] = h } else { missing.append(l) }
    }
    if !missing.isEmpty {
      throw PipelineError.input(
        "labels \(missing.joined(separator: ", ")) match no class of prompt set '\(set.name)' (\(classes.map { $0.name }.joined(separator: ", "))); pass --label-map LABEL=CLASS"
      )
    }
    return out
  }

  /// Every class entry of every knowledge file in a folder, as JSON objects (empty if none).
  public static func knowledge(_ dir: String) -> [[String: Any]] {
    var out: [[String: Any]] = []
    for f in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() where f.hasSuffix(".json") {
      if let o = try? JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: dir + "/" + f) ?? Data())
        as? [String: Any]
      {
        out += (o["classes"] as? [[String: Any]]) ?? []
      }
    }
    return out
  }
}

/// Labelled tiles read, embedded and scored by one classifier: the shared core of `eosin
/// calibrate`, `eosin eval zero-shot` and the finalizer's robustness table.
public struct ScoredTiles: Sendable {
  /// (N, classes) raw logits, the classifier's predictions and each tile's true class.
  public var logits: [Float] = []
  public var predictions: [TilePrediction] = []
  public var truth: [Int] = []
  /// (N, D) image embeddings of the scored tiles.
  public var embeddings: [Float] = []
  /// Tiles that could not be read (each also reported through `warn`).
  public var unreadable = 0
  /// Tiles whose scores were not finite (damaged weights): left out, so no metric sees NaN.
  public var nonFinite = 0

  /// Scores `items`, 64 at a time. `truth` maps a tile's label to its class index; `transform`
  /// changes each image first (a robustness shift); `progress` gets (done, total).
  /// - Throws: ``PipelineError`` when no tile could be read and scored.
  public init(
    _ items: [LabeledTiles.Item], classifier clf: ZeroShotClassifier, truth labelIndex: [String: Int],
    transform: (RGBImage) -> RGBImage = { $0 }, progress: (Int, Int) -> Void = { _, _ in }, warn: (String) -> Void = { _ in }
  ) throws {
    let D = clf.bundle.clip.embedDim, K = clf.classCount
    var i = 0
    while i < items.count {
      let chunk = items[i..<min(items.count, i + 64)]
      var imgs: [RGBImage] = [], labs: [Int] = []
      for it in chunk {
        guard let k = labelIndex[it.label] else { continue }
        do {
          imgs.append(transform(try ImageCodec.read(it.path)))
          labs.append(k)
        } catch {
          warn("skipped \(error.localizedDescription)")
          unreadable += 1
        }
      }
      if !imgs.isEmpty {
        let (e, dist) = SlideIndex.embedImagesScored(imgs, bundle: clf.bundle)
        let lg = clf.logits(e), pr = clf.predict(e, outlier: dist)
        for n in 0..<imgs.count {
          let row = lg[(n * K)..<((n + 1) * K)]
          guard row.allSatisfy(\.isFinite) else {
            nonFinite += 1
            continue
          }
          embeddings += e[(n * D)..<((n + 1) * D)]
          logits += row
          predictions.append(pr[n])
          truth.append(labs[n])
        }
      }
      i += chunk.count
      progress(i, items.count)
    }
    if nonFinite > 0 {
      warn("\(nonFinite) tiles got non-finite scores (NaN or infinity) and were left out; the weights may be damaged")
    }
    guard !truth.isEmpty else { throw PipelineError.input("no tiles could be read and scored") }
  }
}

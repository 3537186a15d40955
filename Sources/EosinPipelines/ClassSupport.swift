import Foundation

/// Which organ a class name speaks of, by its words: "prostate adenocarcinoma" and "Gleason
/// pattern 4" name the prostate, "pulmonary adenocarcinoma" the lung. A term matches at the
/// start of a word ("renal" in "renal cell carcinoma", not in "adrenal"). Terms that name no
/// organ ("tumour", "stroma", "adenocarcinoma") give none.
public enum OrganLexicon {
  /// (organ, word starts that name it).
  public static let organs: [(organ: String, terms: [String])] = [
    ("lung", ["lung", "pulmonary", "bronch", "alveol", "pleura"]),
    ("colorectal", ["colon", "colorectal", "rectum", "rectal", "bowel", "large intestin", "sigmoid", "caecum", "cecum"]),
    ("prostate", ["prostat", "gleason"]),
    ("endometrium", ["endometri", "uterus", "uterine"]),
    ("kidney", ["kidney", "renal", "nephr", "glomerul"]),
    ("breast", ["breast", "mammary", "ductal carcinoma", "lobular carcinoma", "fibroadenoma", "phyllodes"]),
    ("brain", ["brain", "glio", "astrocyt", "oligodendrogl", "meningi", "cerebr", "neuron"]),
    ("lymph node", ["lymph node", "lymphoma", "nodal"]),
    ("skin", ["skin", "melanom", "epiderm", "dermis", "dermal", "basal cell carcinoma", "keratinocyt", "naev", "nev"]),
    ("stomach", ["stomach", "gastric"]),
    ("liver", ["liver", "hepat", "cholangio"]),
    ("bladder", ["bladder", "urothel"]),
    ("thyroid", ["thyroid"]),
    ("pancreas", ["pancrea"]),
    ("ovary", ["ovar"]),
    ("cervix", ["cervix", "cervical"]),
    ("oesophagus", ["oesophag", "esophag", "barrett"]),
    ("testis", ["testis", "testicul", "seminoma"]),
    ("bone", ["bone", "osteo"]),
    ("head and neck", ["oral", "tongue", "laryn", "pharyn", "tonsil", "salivary"]),
    ("heart", ["heart", "cardiac", "myocard"]),
    ("small intestine", ["small intestin", "duoden", "jejun", "ileum", "ileal"]),
    ("spleen", ["spleen", "splen"]),
    ("adrenal", ["adrenal"]),
    ("placenta", ["placent"]),
    ("gallbladder", ["gallbladder"]),
    ("appendix", ["appendi"]),
  ]

  /// The organs `text` names.
  public static func organs(in text: String) -> Set<String> {
    let t = " " + text.lowercased()
    var out: Set<String> = []
    for (organ, terms) in organs {
      for term in terms {
        var search = t.startIndex
        while let r = t.range(of: term, range: search..<t.endIndex) {
          let before = t[t.index(before: r.lowerBound)]
          if !before.isLetter {
            out.insert(organ)
            break
          }
          search = r.upperBound
        }
        if out.contains(organ) { break }
      }
    }
    return out
  }
}

/// The class-support check of the review policy: a prompt-set class that names only organs the
/// model was never trained on (its name, synonyms, or the set's organ) is flagged wherever it is
/// the verdict: the model has no support for it, so its probability means nothing. Classes that
/// name no organ ("tumour", "malignant tumour") cannot be judged this way; the out-of-domain
/// distance watches the image side.
public enum ClassSupport {
  /// The flag for `className` of `set` under a model trained on `trainedOrgans`; nil when
  /// supported, unknown, or when the model states no trained organs.
  ///
  /// A supported verdict is flagged too when the set offers classes the model has no support
  /// for (`alternatives-unsupported`): the model cannot tell tissue of those organs from the
  /// ones it knows, so "colon" in a many-organ set means only "more colon than lung". Weights
  /// trained on lung and colon called brain glioma tiles a trained organ at probability over the
  /// organ set's threshold, unflagged, 7 times in 32 (EVALUATION.md, "Organ recognition").
  public static func flag(className: String, set: PromptSet, trainedOrgans: [String]?) -> ReviewFlag? {
    guard let trained = trainedOrgans, !trained.isEmpty, className != set.background?.name else { return nil }
    let named = organs(of: className, in: set)
    if !named.isEmpty, named.isDisjoint(with: trained) {
      return ReviewFlag(
        code: "class-unsupported",
        reason:
          "\(className) (\(named.sorted().joined(separator: ", "))) is not among the tissues this model was trained on (\(trained.sorted().joined(separator: ", ")))"
      )
    }
    let others = unsupported(in: set, trained: trained).filter { $0 != className }
    guard !others.isEmpty else { return nil }
    let shown = others.prefix(4).joined(separator: ", ") + (others.count > 4 ? " and \(others.count - 4) more" : "")
    return ReviewFlag(
      code: "alternatives-unsupported",
      reason:
        "the \(set.name) set also offers \(shown), which this model was never trained on (it knows \(trained.sorted().joined(separator: ", "))): it cannot rule them out"
    )
  }

  /// The organs a class of `set` names (its phrases; else the set's organ).
  static func organs(of className: String, in set: PromptSet) -> Set<String> {
    var named: Set<String> = []
    if let c = set.allClasses.first(where: { $0.name == className }) {
      for p in c.phrases { named.formUnion(OrganLexicon.organs(in: p)) }
    } else {
      named = OrganLexicon.organs(in: className)
    }
    if named.isEmpty, let o = set.organName { named = OrganLexicon.organs(in: o).union([o]) }
    return named
  }

  /// The classes of `set` (background aside) that name only organs outside `trained`, in the
  /// set's order; computed once per set content and trained organs.
  static func unsupported(in set: PromptSet, trained: [String]) -> [String] {
    let key = ReviewThresholds.key(for: set) + "|" + trained.sorted().joined(separator: ",")
    if let v = memo.value[key] { return v }
    let v = set.classes.map(\.name).filter { n in
      let o = organs(of: n, in: set)
      return !o.isEmpty && o.isDisjoint(with: trained)
    }
    memo.value[key] = v
    return v
  }
  static let memo = LockedBox<[String: [String]]>([:])
}

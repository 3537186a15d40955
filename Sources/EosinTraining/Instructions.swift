import Foundation

/// Question-answer pairs about a labelled input, built from its knowledge class. 22 question
/// types: diagnosis, organ, benign or malignant, features, next steps, grade, and yes/no checks.
/// Inputs with no interpretable tissue are always answered "No interpretable tissue ...".
public enum Instructions {
  public static let noTissueAnswer = "No interpretable tissue is present, so no diagnosis can be made."

  public static let questionTypes = [
    "diagnosis", "organ", "behaviour", "features", "next", "malignant?", "benign?", "tumour?", "grade", "synonym", "normal?",
    "summary", "keratin?", "glands?", "mucin?", "necrosis?", "dysplasia?", "carcinoma-type", "ihc?", "interpretable?",
    "diagnosis-2",
    "features-2",
  ]

  static let phrasings: [String: [String]] = [
    "diagnosis": ["What is the diagnosis?", "What does this slide show?", "What is the most likely diagnosis?"],
    "diagnosis-2": ["Can you name the lesion?", "Which diagnosis fits these tiles?"],
    "organ": ["Which organ is this?", "What tissue of origin is this?"],
    "behaviour": ["Is this benign or malignant?", "Is the lesion benign, premalignant or malignant?"],
    "features": ["Describe the features.", "What morphological features are present?"],
    "features-2": ["What do you see?", "Describe the histology."],
    "next": ["What should be checked next?", "What is the next step?"],
    "malignant?": ["Is this malignant?", "Is there cancer?"],
    "benign?": ["Is this benign?"],
    "tumour?": ["Is there a tumour?", "Is neoplasia present?"],
    "grade": ["What grade is this?", "Can you grade the lesion?"],
    "synonym": ["What else is this called?"],
    "normal?": ["Is this tissue normal?"],
    "summary": ["Summarise the slide.", "Give a short report."],
    "keratin?": ["Is keratinisation present?"],
    "glands?": ["Are glands present?"],
    "mucin?": ["Is mucin present?"],
    "necrosis?": ["Is there necrosis?"],
    "dysplasia?": ["Is there dysplasia?"],
    "carcinoma-type": ["What type of carcinoma is this?"],
    "ihc?": ["Is immunohistochemistry needed?"],
    "interpretable?": ["Is the tissue interpretable?", "Is there enough tissue to assess?"],
  ]

  /// A (question, answer) for class `k` and question type `type`.
  public static func pair(_ k: KnowledgeClass, type: String, rng: inout SeededRNG) -> (String, String) {
    let qs = phrasings[type]!
    let q = qs[Int(rng.next() % UInt64(qs.count))]
    let none = k.id == "non_tissue"
    func has(_ w: String) -> Bool { k.features.contains { $0.lowercased().contains(w) } }
    func yn(_ b: Bool, _ yes: String, _ no: String) -> String { b ? "Yes, " + yes : "No, " + no }
    let feats = k.features.shuffled(using: &rng).prefix(3)
    let malignant = k.behaviour == "malignant"
    if none && type != "interpretable?" && type != "organ" && type != "features-2" { return (q, noTissueAnswer) }
    let a: String
    switch type {
    case "diagnosis", "diagnosis-2": a = "The findings are consistent with \(k.name)."
    case "organ": a = none ? "No tissue is present to tell the organ." : "The tissue is from the \(k.organ)."
    case "behaviour": a = "This is \(k.behaviour)."
    case "features": a = "The features include " + feats.joined(separator: "; ") + "."
    case "features-2": a = none ? noTissueAnswer : "I see " + feats.joined(separator: ", ") + ", consistent with \(k.name)."
    case "next":
      a =
        (k.nextSteps ?? "correlate with the clinical findings").prefix(1).uppercased()
        + (k.nextSteps ?? "correlate with the clinical findings").dropFirst() + "."
    case "malignant?": a = yn(malignant, "this is \(k.name).", "this is \(k.name), which is \(k.behaviour).")
    case "benign?": a = yn(k.behaviour == "benign", "this is \(k.name).", "this is \(k.name), which is \(k.behaviour).")
    case "tumour?": a = yn(k.behaviour != "benign", "this is \(k.name).", "this is \(k.name).")
    case "grade":
      a =
        k.grade.map { "This is \($0) \(k.name)." }
        ?? (malignant
          ? "The grade cannot be judged reliably from these tiles; the diagnosis is \(k.name)."
          : "Grading does not apply to \(k.name).")
    case "synonym":
      a =
        k.synonyms.isEmpty
        ? "It is called \(k.name)."
        : "\(k.name.prefix(1).uppercased() + k.name.dropFirst()) is also called \(k.synonyms.randomElement(using: &rng)!)."
    case "normal?":
      a = yn(
        k.behaviour == "benign" && (k.name.contains("normal") || k.name.contains("benign")), "this is \(k.name).",
        "this is \(k.name).")
    case "summary":
      a =
        "Diagnosis: \(k.name). Organ: \(k.organ). Behaviour: \(k.behaviour). Key features: "
        + feats.prefix(2).joined(separator: "; ") + "."
    case "keratin?": a = yn(has("kerat"), "keratinisation supports \(k.name).", "there is no keratinisation; this is \(k.name).")
    case "glands?":
      a = yn(
        has("gland") || has("acin") || has("crypt"), "glandular structures are present in \(k.name).",
        "no glands are formed; this is \(k.name).")
    case "mucin?": a = yn(has("mucin") || has("goblet"), "mucin is present in \(k.name).", "no mucin is seen; this is \(k.name).")
    case "necrosis?": a = yn(has("necrosis"), "necrosis is present in \(k.name).", "no necrosis is seen in \(k.name).")
    case "dysplasia?": a = yn(k.behaviour == "premalignant", "this is \(k.name).", "this is \(k.name).")
    case "carcinoma-type": a = malignant ? "This is \(k.name)." : "This is not a carcinoma; it is \(k.name)."
    case "ihc?": a = (k.nextSteps ?? "").contains("immuno") ? "Yes: \(k.nextSteps!)." : "Not for the diagnosis of \(k.name)."
    case "interpretable?": a = none ? "No. " + noTissueAnswer : "Yes, the tissue is interpretable and shows \(k.name)."
    default: a = "This is \(k.name)."
    }
    return (q, a)
  }
}

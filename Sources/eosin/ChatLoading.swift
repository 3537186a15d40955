import EosinModels
import EosinPipelines
import EosinTensor
import Foundation

/// Everything `eosin chat` loads before its prompt: the weights (CLIP, review model, wording),
/// the embedded decoder, the prompt sets, Eosin's notes and the language model with the
/// projector and adapters trained for it. `eosin bench chat` times this same load.
struct ChatModels {
  var bundle: ModelBundle
  var chat: ChatModel
  var promptSets: [PromptSet]
  var notes: KnowledgeNotes
  /// The grounded language model; nil when none resolves (`--lm none`, or none fetched).
  var grounded: GroundedLM?
  /// Why the language model runs without slide tokens, when it does.
  var noSlideTokens: String?

  /// Loads the independent parts on every core at once (the weights, the embedded decoder, the
  /// language model, the notes and the prompt sets each take tens of milliseconds), then joins
  /// what depends on more than one of them. Errors are reported in the order a sequential load
  /// would meet them: the weights first.
  static func load(_ model: ModelOptions, lm: String?, retrieval: Retrieval) throws -> ChatModels {
    let weights = model.weights ?? ModelBundle.defaultPath()
    let lmPath = LanguageModel.Default.resolve(lm)
    final class Slot<T>: @unchecked Sendable {
      var value: Result<T, Error>? = nil
      func get() throws -> T { try value!.get() }
    }
    let bundle = Slot<ModelBundle>(), chat = Slot<ChatModel>(), sets = Slot<[PromptSet]>()
    let notes = Slot<KnowledgeNotes>(), language = Slot<LanguageModel?>()
    // Longest first, so two cores finish together.
    let tasks: [() -> Void] = [
      { bundle.value = Result { try model.bundle() } },
      {
        chat.value = Result {
          // The decoder's own copy of the manifest, so it need not wait for the weights; its
          // projector's width is checked against the CLIP model's after the join.
          // (Reading the manifest twice costs about 3 ms; waiting for the weights, 100-170.)
          let man = weights + "/manifest.json"
          let manifest = FileManager.default.fileExists(atPath: man) ? try WeightsManifest.load(man) : nil
          guard let dir = ModelBundle.decoderDirectory(in: weights) else {
            throw CLIError("\(weights): these weights have no decoder/; chat needs one (see `eosin train decoder`)")
          }
          return try ChatModel(directory: dir, imageDim: nil, manifest: manifest)
        }
      },
      { language.value = Result { try lmPath.map { try LanguageModel(path: $0) } } },
      { notes.value = Result { try chatNotes() } },
      { sets.value = Result { try PromptSet.loadAll(searchDirs: promptDirs("zero-shot")) } },
    ]
    DispatchQueue.concurrentPerform(iterations: tasks.count) { tasks[$0]() }
    let b = try bundle.get()
    let c = try chat.get()
    try c.checkFits(b)
    var loaded = ChatModels(bundle: b, chat: c, promptSets: try sets.get(), notes: try notes.get(), grounded: nil)
    if let l = try language.get() {
      (loaded.grounded, loaded.noSlideTokens) = try groundedLM(l, bundle: b, notes: loaded.notes, retrieval: retrieval)
    }
    return loaded
  }
}

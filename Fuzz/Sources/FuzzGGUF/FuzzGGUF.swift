import EosinModels
import EosinPipelines
import EosinWeights

/// One fuzz input: parse it as a GGUF file; when that succeeds, dequantise every small tensor,
/// load the model with its name table and build its tokenizer. Any crash, out-of-bounds read
/// (AddressSanitizer) or runaway allocation is a bug; thrown errors are the expected outcome.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  guard let f = try? GGUFFile(bytes: UnsafeRawBufferPointer(start: data, count: size), name: "fuzz.gguf") else { return 0 }
  for t in f.tensorList where t.elementCount <= 1 << 16 { _ = try? f.tensor(t.name) }
  if let m = try? LlamaModel(file: f), m.config.channels <= 512, m.config.layers <= 8, m.config.ffn <= 2048,
    m.config.vocabSize <= 1 << 13
  {
    _ = try? m.forward([0], state: m.makeState(capacity: 4))
  }
  if let tok = try? LanguageModel.tokenizer(f) { _ = tok.encodeLlama("Hello 123 <|im_start|> wörld", parseSpecial: true) }
  return 0
}

// SwiftPM links an executable target's entry point as `<Target>_main`; hand it to libFuzzer's
// driver (libFuzzer's own `main` is then not linked in).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
  _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
  _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("FuzzGGUF_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
  var c = argc
  var v = argv
  return LLVMFuzzerRunDriver(&c, &v, fuzzGGUF)
}

import EosinTensor
import Foundation

// Model configs keep the checkpoint's own field names (HF `config.json`) through CodingKeys.
// Missing optional fields take HF's defaults.

/// HF `CLIPVisionConfig`.
public struct CLIPVisionConfig: Codable, Sendable {
  public var hiddenSize = 768
  public var intermediateSize = 3072
  public var numHiddenLayers = 12
  public var numAttentionHeads = 12
  public var imageSize = 224
  public var patchSize = 16
  public var numChannels = 3
  public var hiddenAct = "quick_gelu"
  public var layerNormEps: Float = 1e-5
  /// Eosin's extension: the width of the tissue-statistics branch (``TissueFeatures/count``), 0
  /// for none (every HF checkpoint).
  public var tissueFeatures = 0

  enum CodingKeys: String, CodingKey {
    case hiddenSize = "hidden_size", intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
    case numAttentionHeads = "num_attention_heads", imageSize = "image_size", patchSize = "patch_size"
    case numChannels = "num_channels", hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps"
    case tissueFeatures = "eosin_tissue_features"
  }

  public init() {}
  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? hiddenSize
    intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? intermediateSize
    numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? numHiddenLayers
    numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? numAttentionHeads
    imageSize = try c.decodeIfPresent(Int.self, forKey: .imageSize) ?? imageSize
    patchSize = try c.decodeIfPresent(Int.self, forKey: .patchSize) ?? patchSize
    numChannels = try c.decodeIfPresent(Int.self, forKey: .numChannels) ?? numChannels
    hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
    layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? layerNormEps
    tissueFeatures = try c.decodeIfPresent(Int.self, forKey: .tissueFeatures) ?? 0
  }
}

/// HF `CLIPTextConfig`.
public struct CLIPTextConfig: Codable, Sendable {
  public var vocabSize = 49408
  public var hiddenSize = 512
  public var intermediateSize = 2048
  public var numHiddenLayers = 12
  public var numAttentionHeads = 8
  public var maxPositionEmbeddings = 77
  public var hiddenAct = "quick_gelu"
  public var layerNormEps: Float = 1e-5
  /// HF's rule: eos id 2 means a legacy config, pooled at the highest token id (argmax).
  public var eosTokenId = 2
  public var bosTokenId = 1

  enum CodingKeys: String, CodingKey {
    case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
    case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
    case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps"
    case eosTokenId = "eos_token_id", bosTokenId = "bos_token_id"
  }

  public init() {}
  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? vocabSize
    hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? hiddenSize
    intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? intermediateSize
    numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? numHiddenLayers
    numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? numAttentionHeads
    maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? maxPositionEmbeddings
    hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? hiddenAct
    layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? layerNormEps
    eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId) ?? eosTokenId
    bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId) ?? bosTokenId
  }
}

/// HF `CLIPConfig`.
public struct CLIPConfig: Codable, Sendable {
  public var projectionDim = 512
  public var logitScaleInitValue: Float = 2.6592
  public var textConfig = CLIPTextConfig()
  public var visionConfig = CLIPVisionConfig()

  enum CodingKeys: String, CodingKey {
    case projectionDim = "projection_dim", logitScaleInitValue = "logit_scale_init_value"
    case textConfig = "text_config", visionConfig = "vision_config"
  }

  public init() {}
  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    projectionDim = try c.decodeIfPresent(Int.self, forKey: .projectionDim) ?? projectionDim
    logitScaleInitValue = try c.decodeIfPresent(Float.self, forKey: .logitScaleInitValue) ?? logitScaleInitValue
    textConfig = try c.decodeIfPresent(CLIPTextConfig.self, forKey: .textConfig) ?? textConfig
    visionConfig = try c.decodeIfPresent(CLIPVisionConfig.self, forKey: .visionConfig) ?? visionConfig
  }
}

/// HF `GPT2Config`.
public struct GPT2Config: Codable, Sendable {
  public var vocabSize = 50257
  public var nPositions = 1024
  public var nEmbd = 768
  public var nLayer = 12
  public var nHead = 12
  public var nInner: Int? = nil
  public var activationFunction = "gelu_new"
  public var layerNormEpsilon: Float = 1e-5
  public var bosTokenId = 50256
  public var eosTokenId = 50256

  enum CodingKeys: String, CodingKey {
    case vocabSize = "vocab_size", nPositions = "n_positions", nEmbd = "n_embd", nLayer = "n_layer", nHead = "n_head"
    case nInner = "n_inner", activationFunction = "activation_function", layerNormEpsilon = "layer_norm_epsilon"
    case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id"
  }

  public init() {}
  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? vocabSize
    nPositions = try c.decodeIfPresent(Int.self, forKey: .nPositions) ?? nPositions
    nEmbd = try c.decodeIfPresent(Int.self, forKey: .nEmbd) ?? nEmbd
    nLayer = try c.decodeIfPresent(Int.self, forKey: .nLayer) ?? nLayer
    nHead = try c.decodeIfPresent(Int.self, forKey: .nHead) ?? nHead
    nInner = try c.decodeIfPresent(Int?.self, forKey: .nInner) ?? nil
    activationFunction = try c.decodeIfPresent(String.self, forKey: .activationFunction) ?? activationFunction
    layerNormEpsilon = try c.decodeIfPresent(Float.self, forKey: .layerNormEpsilon) ?? layerNormEpsilon
    bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId) ?? bosTokenId
    eosTokenId = try c.decodeIfPresent(Int.self, forKey: .eosTokenId) ?? eosTokenId
  }
}

/// Errors from building a model from a config.
public enum ModelError: LocalizedError {
  case config(String)
  case input(String)
  public var errorDescription: String? {
    switch self {
    case .config(let m): return "model config: \(m)"
    case .input(let m): return "model input: \(m)"
    }
  }
}

func activation(_ name: String) throws -> Activation {
  guard let a = Activation(configName: name) else { throw ModelError.config("unsupported activation '\(name)'") }
  return a
}

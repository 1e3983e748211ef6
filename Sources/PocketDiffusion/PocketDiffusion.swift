// One import for programs that build their own pipeline: every module a custom
// denoising loop needs, from the model file to the PNG, plus the converter.
//
//     import PocketDiffusion
//
// See the DocC catalog (`PocketDiffusion.docc`) and `Examples/CustomPipeline`.
@_exported import SDConverter
@_exported import SDFormat
@_exported import SDKernels
@_exported import SDModels
@_exported import SDPipeline
@_exported import SDSchedulers
@_exported import SDTokenizer

import CBLAS

/// y = alpha * A x (A (M,N) row-major with leading dimension lda), or alpha * A^T x when
/// `transpose` (then x has M elements and y has N).
public func gemvRowMajor(
  _ y: UnsafeMutablePointer<Float>, _ A: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ M: Int, _ N: Int, _ lda: Int,
  _ alpha: Float, transpose: Bool
) {
  cblas_sgemv(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), alpha, A, Int32(lda), x, 1, 0, y, 1)
}

/// C (M,N) = alpha * A (M,K) @ B^T where B is (N,K), all row-major and contiguous.
public func sgemmNT(
  _ Cm: UnsafeMutablePointer<Float>, _ A: UnsafePointer<Float>, _ B: UnsafePointer<Float>, _ M: Int, _ N: Int, _ K: Int,
  alpha: Float = 1
) {
  cblas_sgemm(
    CblasRowMajor, CblasNoTrans, CblasTrans, Int32(M), Int32(N), Int32(K), alpha, A, Int32(K), B, Int32(K), 0, Cm, Int32(N))
}

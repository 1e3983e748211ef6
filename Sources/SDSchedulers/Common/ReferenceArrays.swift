// The numpy and torch array functions that diffusers' set_timesteps code is written with,
// reproduced to the bit (the tests compare tables bit for bit):
//   torch.linspace(float32)  start + step*i (i < n/2) or end - step*(n-1-i), FMA-fused as built;
//   torch.cumprod(float32)   accumulated in double, each partial product rounded to float;
//   np.linspace / np.arange / np.interp  in double; np.round is round-half-to-even.

// MARK: - torch

/// torch.linspace(start, end, count, dtype=float32) on CPU.
func torchLinspace(_ start: Double, _ end: Double, count: Int) -> [Float] {
    let s = Float(start), e = Float(end)
    if count == 1 { return [s] }
    let step = (e - s) / Float(count - 1)
    let halfway = count / 2
    return (0..<count).map { i in
        i < halfway ? s.addingProduct(step, Float(i)) : e.addingProduct(-step, Float(count - 1 - i))
    }
}

/// torch.cumprod of a float32 tensor on CPU.
func torchCumprod(_ values: [Float]) -> [Float] {
    var accumulator = 1.0
    return values.map { value in
        accumulator *= Double(value)
        return Float(accumulator)
    }
}

// MARK: - numpy (float64)

/// np.linspace(start, stop, num): i * step + start, the last value set to stop.
func numpyLinspace(_ start: Double, _ stop: Double, count: Int) -> [Double] {
    if count == 1 { return [start] }
    let step = (stop - start) / Double(count - 1)
    var y = (0..<count).map { Double($0) * step + start }
    y[count - 1] = stop
    return y
}

/// np.arange(start, stop, step) for floats: ceil((stop - start) / step) values, filled as
/// start + i * delta with delta = (start + step) - start.
func numpyArange(_ start: Double, _ stop: Double, step: Double) -> [Double] {
    let length = ((stop - start) / step).rounded(.up)
    guard length >= 1 else { return [] }
    let count = Int(length)
    if count == 1 { return [start] }
    let delta = (start + step) - start
    return (0..<count).map { i in i == 1 ? start + step : start + Double(i) * delta }
}

/// np.interp(x, arange(table.count), table).
func numpyInterp(_ x: Double, table: [Float]) -> Double {
    let last = table.count - 1
    if x.isNaN { return x }
    if x < 0 { return Double(table[0]) }
    if x >= Double(last) { return Double(table[last]) }
    let j = Int(x.rounded(.down))
    if Double(j) == x { return Double(table[j]) }
    let slope = Double(table[j + 1]) - Double(table[j])
    return slope * (x - Double(j)) + Double(table[j])
}

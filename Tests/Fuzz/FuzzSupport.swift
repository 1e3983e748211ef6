import Glibc

// Shared by every libFuzzer target (tools/fuzz.sh compiles it into each one).

/// The fuzz input as a mapped file, which is what the readers take: it is written to one
/// unlinked file in /dev/shm (memory, no disk), reused for every input, and mapped through
/// /proc/self/fd.
func withMappedInput(_ data: UnsafePointer<UInt8>, _ size: Int, _ body: (MappedFile) throws -> Void) {
    let fd = inputFile
    guard ftruncate(fd, 0) == 0 else { fatalError("cannot truncate the fuzz input file") }
    var done = 0
    while done < size {
        let n = pwrite(fd, data + done, size - done, off_t(done))
        guard n > 0 else { fatalError("cannot write the fuzz input file") }
        done += n
    }
    // An empty or unmappable input is one of the errors the reader must report cleanly.
    guard let file = try? MappedFile(path: "/proc/self/fd/\(fd)") else { return }
    try? body(file)
}

let inputFile: Int32 = {
    let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    let path = "\(dir)/pocketsd-fuzz-\(getpid())"
    let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
    guard fd >= 0 else { fatalError("cannot create \(path)") }
    unlink(path)
    return fd
}()

/// Reads every element of a tensor the reader handed out: an out-of-bounds range shows up
/// as an AddressSanitizer report or a fault instead of passing unnoticed.
func touch(_ t: TensorView?) {
    guard let t, t.elementCount <= 1 << 16 else { return }
    var sum: Float = 0
    for i in 0..<t.elementCount { sum += t.float(at: i) }
    if sum.isNaN { blackHole += 1 }
}

nonisolated(unsafe) var blackHole = 0

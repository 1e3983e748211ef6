import Glibc
import Synchronization

/// What the process does on the signals a run can meet, and the temporary files it must not
/// leave behind:
///
/// - SIGINT, SIGTERM: remove every registered temporary file, exit 128 + signal (130, 143).
/// - SIGBUS: a page of a mapped file could not be read (the model or checkpoint was
///   truncated or replaced while in use, or the disk failed): remove the temporary files,
///   print one line, exit 1. Swift has no sigsetjmp to turn the fault into an error that
///   unwinds, so the handler ends the process itself; it touches only async-signal-safe
///   calls (unlink, write, _exit) and memory allocated before the signal.
/// - SIGXFSZ: ignored, so a write past `ulimit -f` fails with EFBIG and is reported as a
///   write error instead of killing the process without a word.
public enum ProcessSignals {
    /// Registered temporary paths, as C strings. A fixed table allocated once: the handler
    /// must not allocate or take locks. Slots are written only by the thread that registers
    /// (set last) and unregisters (cleared first, freed after), so a handler sees either a
    /// whole path or nil.
    static let capacity = 256
    nonisolated(unsafe) static let slots: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        p.initialize(repeating: nil, count: capacity)
        return p
    }()
    nonisolated(unsafe) static var installed = false
    static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    static let busMessage = Array("pocketsd: error: a mapped input file could not be read (truncated or replaced while in use, or a disk error); stopped\n".utf8CString)

    /// Installs the handlers (once; later calls do nothing).
    public static func install() {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard !installed else { return }
        installed = true
        _ = slots  // allocate the table before any signal can arrive
        _ = busMessage
        _ = handling.load(ordering: .relaxed)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = interruptHandler
        sigemptyset(&action.sa_mask)
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
        var bus = sigaction()
        bus.__sigaction_handler.sa_handler = busHandler
        sigemptyset(&bus.sa_mask)
        sigaction(SIGBUS, &bus, nil)
        signal(SIGXFSZ, SIG_IGN)
    }

    /// Removes `path` if the process is interrupted before `unregister(path)`.
    public static func register(_ path: String) {
        install()
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for i in 0..<capacity where slots[i] == nil {
            slots[i] = strdup(path)
            return
        }
        // More temporary files than slots cannot happen (runs write at most 65 files); if it
        // did, the file would only be left behind on an interrupt.
    }

    /// Stops removing `path` on interruption (once it is renamed into place or deleted).
    public static func unregister(_ path: String) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for i in 0..<capacity {
            if let p = slots[i], strcmp(p, path) == 0 {
                slots[i] = nil
                free(p)
                return
            }
        }
    }

    /// The registered paths (for tests).
    public static var registered: [String] {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return (0..<capacity).compactMap { slots[$0].map { String(cString: $0) } }
    }

    /// Set by the first handler to run. Worker threads that read the same truncated pages
    /// fault at once, each running the handler: only the first cleans up, prints and exits;
    /// the others wait for its `_exit` (which ends them too).
    static let handling = Atomic<Bool>(false)

    static func claimOrWait() {
        if handling.exchange(true, ordering: .acquiringAndReleasing) { while true { pause() } }
    }

    static func removeRegistered() {
        for i in 0..<capacity { if let p = slots[i] { unlink(p) } }
    }

    static let interruptHandler: @convention(c) (Int32) -> Void = { sig in
        ProcessSignals.claimOrWait()
        ProcessSignals.removeRegistered()
        _exit(128 + sig)
    }

    static let busHandler: @convention(c) (Int32) -> Void = { _ in
        ProcessSignals.claimOrWait()
        ProcessSignals.removeRegistered()
        ProcessSignals.busMessage.withUnsafeBufferPointer { m in _ = write(2, m.baseAddress, m.count - 1) }
        _exit(1)
    }
}

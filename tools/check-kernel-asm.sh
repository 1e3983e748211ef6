#!/usr/bin/env bash
# Checks that the release build of SDKernels keeps its hot loops free of per-lane library
# calls. Without `-target-cpu haswell` (FMA + F16C) on x86_64, `addingProduct` and Float16
# conversions silently become calls to fmaf / __extendhfsf2 / __truncsfhf2 per lane (25–50×
# slower); an unspecialised generic kernel shows up as calls into the stdlib's SIMD witnesses.
#
# Usage: tools/check-kernel-asm.sh [--no-build] [--build-path DIR]
#   --no-build        check the objects already in DIR/release/SDKernels.build
#   --build-path DIR  SwiftPM build directory (default: <package>/.build)
#
# What it checks, in every function of the SDKernels objects whose symbol belongs to the
# fast kernels (Kernels, Gemm, BF16Gemm, Conv, Winograd, Winograd43, Attention, Normalization, Elementwise, VectorMath;
# closures and generic specialisations included; ReferenceKernels excluded):
#   - no call/relocation to: fmaf fma __extendhfsf2 __truncsfhf2 __gnu_h2f_ieee
#     __gnu_f2h_ieee expf exp exp2f erff erf
#   - no call to swift_getAssociatedTypeWitness / swift_getAssociatedConformanceWitness or
#     to the generic SIMD / SIMDStorage protocol witnesses ($ss4SIMDP…, $ss11SIMDStorageP…)
# and, as positive evidence that the flags took effect:
#   - the GEMM micro-kernel contains vfmadd…ps on ymm registers
#   - some Gemm function contains vcvtph2ps (f16 weights converted with F16C)
#   - the C bf16 kernel (CKernels) contains vdpbf16ps on zmm registers, and its micro-tile
#     (`tile`) keeps its 24 accumulators in registers: no zmm moves to or from the stack (a
#     loop clang cannot unroll puts them in memory; that once cost 20-45 % of its speed)
#   - the C f32 block products (f32_gemm.c) contain vfmadd…ps on zmm (AVX-512) and ymm
#     (AVX2), and the AVX-512 one keeps its 28 accumulators in registers
#   - the C int8 block products (i8_vnni.c) contain vpdpbusd on zmm (AVX512-VNNI) and on ymm
#     (AVX-VNNI), and the zmm one keeps its 24 accumulators (12 int32, 12 f32) in registers
#   - the C softmax, activations and norms (f32_vector_math.c) contain vfmadd…ps on ymm and
#     call nothing (their exponential and erf inlined, no libm); their 16-wide builds
#     (f32_vector_math_avx512.c) the same on zmm
# x86_64 only; on other hosts it prints a note and exits 0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
package="$(cd "$here/.." && pwd)"
build_path="$package/.build"
do_build=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-build) do_build=0; shift ;;
        --build-path) build_path="$2"; shift 2 ;;
        *) echo "usage: $0 [--no-build] [--build-path DIR]" >&2; exit 2 ;;
    esac
done

if [[ "$(uname -m)" != "x86_64" ]]; then
    echo "check-kernel-asm: x86_64 only (host is $(uname -m)); skipped"
    exit 0
fi
command -v objdump >/dev/null || { echo "check-kernel-asm: objdump not found" >&2; exit 2; }

if [[ $do_build == 1 ]]; then
    # The flags of tools/build.sh, so the objects checked are the ones the tests and the demo
    # run (and nothing is rebuilt after tools/test.sh).
    (cd "$package" && . tools/swift-flags.sh &&
        swift build "${swift_release_flags[@]}" --target SDKernels --build-path "$build_path")
    # (SDKernels depends on CKernels, so its object is built too.)
fi

objects_dir="$build_path/release/SDKernels.build"
shopt -s nullglob
objects=("$objects_dir"/*.o)
if [[ ${#objects[@]} == 0 ]]; then
    echo "check-kernel-asm: no objects in $objects_dir" >&2
    exit 2
fi

# Mangled type prefixes of the fast-kernel namespaces ($s9SDKernels<len><Name>O…).
kernels='^\$s9SDKernels(7KernelsO|4GemmO|8BF16GemmO|4ConvO|8WinogradO|10Winograd43O|9AttentionO|13NormalizationO|11ElementwiseO|10VectorMathO)'
forbidden='^(fmaf|fma|__extendhfsf2|__truncsfhf2|__gnu_h2f_ieee|__gnu_f2h_ieee|expf|exp|exp2f|erff|erf|swift_getAssociatedTypeWitness|swift_getAssociatedConformanceWitness|\$ss4SIMDP.*|\$ss11SIMDStorageP.*)$'

report="$(for o in "${objects[@]}"; do
    objdump -dr --no-show-raw-insn "$o" | awk -v kernels="$kernels" -v forbidden="$forbidden" '
        /^[0-9a-f]+ <.*>:$/ {
            name = $2; sub(/^</, "", name); sub(/>:$/, "", name)
            inKernel = (name ~ kernels)
            micro = (name ~ /^\$s9SDKernels4GemmO11microKernel/)
            gemm = (name ~ /^\$s9SDKernels4GemmO/)
            next
        }
        !inKernel { next }
        micro && /vfmadd[0-9]+ps[^,]*%ymm/ { fmaCount++ }
        gemm && /vcvtph2ps/ { cvtCount++ }
        /R_X86_64_/ {
            target = $3; sub(/[-+]0x[0-9a-f]+$/, "", target); sub(/@.*$/, "", target)
            if (target ~ forbidden) printf "BAD %s calls %s\n", name, target
        }
        END { printf "FMA %d\nCVT %d\n", fmaCount, cvtCount }'
done)"

bad="$(grep '^BAD ' <<<"$report" | sort -u || true)"
fma=$(awk '/^FMA /{s += $2} END {print s + 0}' <<<"$report")
cvt=$(awk '/^CVT /{s += $2} END {print s + 0}' <<<"$report")

dpbf16=0 spills=0
for o in "$build_path"/release/CKernels.build/*.o; do
    dpbf16=$((dpbf16 + $(objdump -d --no-show-raw-insn "$o" | grep -c 'vdpbf16ps.*%zmm' || true)))
    spills=$((spills + $(objdump -d --no-show-raw-insn "$o" | awk '/<tile>:/,/ret/' \
        | grep -cE 'zmm.*\(%rsp\)|\(%rsp\).*zmm' || true)))
done
# The f32 block products (f32_gemm.c): AVX-512 FMAs on zmm with the 28 accumulators of the
# 14 × 32 tile in registers (no zmm stack traffic anywhere in the function), AVX2 FMAs on ymm.
f32zmm=0 f32ymm=0 f32spills=0
for o in "$build_path"/release/CKernels.build/*.o; do
    dis=$(objdump -d --no-show-raw-insn "$o")
    f32zmm=$((f32zmm + $(awk '/<pd_f32_gemm_block_avx512>:/,/^$/' <<<"$dis" | grep -c 'vfmadd...ps.*%zmm' || true)))
    f32ymm=$((f32ymm + $(awk '/<pd_f32_gemm_block_avx2>:/,/^$/' <<<"$dis" | grep -c 'vfmadd...ps.*%ymm' || true)))
    f32spills=$((f32spills + $(awk '/<pd_f32_gemm_block_avx512>:/,/^$/' <<<"$dis" \
        | grep -cE 'zmm.*\(%rsp\)|\(%rsp\).*zmm' || true)))
done

# The int8 block products (i8_vnni.c): vpdpbusd on zmm with the 6 × 32 tile's int32 and f32
# sums in registers (no zmm stack traffic in the function), vpdpbusd on ymm in the AVX-VNNI one.
i8zmm=0 i8ymm=0 i8spills=0
for o in "$build_path"/release/CKernels.build/i8_vnni.c.o; do
    dis=$(objdump -d --no-show-raw-insn "$o")
    i8zmm=$(awk '/<pd_i8_gemm_block_avx512vnni>:/,/^$/' <<<"$dis" | grep -c 'vpdpbusd.*%zmm' || true)
    i8ymm=$(awk '/<pd_i8_gemm_block_avxvnni>:/,/^$/' <<<"$dis" | grep -c 'vpdpbusd.*%ymm' || true)
    i8spills=$(awk '/<pd_i8_gemm_block_avx512vnni>:/,/^$/' <<<"$dis" \
        | grep -cE 'zmm.*\(%rsp\)|\(%rsp\).*zmm' || true)
done

# The softmax, activations and norms (f32_vector_math.c): FMAs on ymm, no calls at all.
vmfma=0 vmcalls=0
for o in "$build_path"/release/CKernels.build/f32_vector_math.c.o; do
    dis=$(objdump -d --no-show-raw-insn "$o" | awk '/^[0-9a-f]+ <pd_[a-z0-9_]*_avx2>:/,/^$/')
    vmfma=$(grep -c 'vfmadd...ps.*%ymm' <<<"$dis" || true)
    vmcalls=$(grep -cE '\scall' <<<"$dis" || true)
done
vm16fma=0 vm16calls=0
for o in "$build_path"/release/CKernels.build/f32_vector_math_avx512.c.o; do
    dis=$(objdump -d --no-show-raw-insn "$o" | awk '/^[0-9a-f]+ <pd_[a-z0-9_]*_avx512>:/,/^$/')
    vm16fma=$(grep -c 'vfmadd...ps.*%zmm' <<<"$dis" || true)
    vm16calls=$(grep -cE '\scall' <<<"$dis" || true)
done

status=0
if [[ $vmfma == 0 || $vmcalls != 0 ]]; then
    echo "check-kernel-asm: f32_vector_math.c: $vmfma ymm FMAs, $vmcalls calls (want FMAs and no calls)"
    status=1
fi
if [[ $vm16fma == 0 || $vm16calls != 0 ]]; then
    echo "check-kernel-asm: f32_vector_math_avx512.c: $vm16fma zmm FMAs, $vm16calls calls (want FMAs and no calls)"
    status=1
fi
if [[ $f32zmm == 0 || $f32ymm == 0 ]]; then
    echo "check-kernel-asm: f32 block products lack FMAs (zmm: $f32zmm, ymm: $f32ymm): target attributes ignored?"
    status=1
fi
if [[ $f32spills != 0 ]]; then
    echo "check-kernel-asm: the AVX-512 f32 block product moves zmm registers to or from the stack ($f32spills times)"
    status=1
fi
if [[ $i8zmm == 0 || $i8ymm == 0 ]]; then
    echo "check-kernel-asm: int8 block products lack vpdpbusd (zmm: $i8zmm, ymm: $i8ymm): target attributes ignored?"
    status=1
fi
if [[ $i8spills != 0 ]]; then
    echo "check-kernel-asm: the AVX512-VNNI int8 block product moves zmm registers to or from the stack ($i8spills times)"
    status=1
fi
if [[ -n "$bad" ]]; then
    echo "check-kernel-asm: per-lane library or generic-witness calls in kernel code:"
    sed 's/^BAD /  /' <<<"$bad" | head -40
    status=1
fi
if [[ $fma == 0 ]]; then
    echo "check-kernel-asm: no vfmadd…ps ymm in Gemm.microKernel (FMA not enabled? -target-cpu haswell)"
    status=1
fi
if [[ $cvt == 0 ]]; then
    echo "check-kernel-asm: no vcvtph2ps in Gemm (F16C not enabled? -target-cpu haswell)"
    status=1
fi
if [[ $dpbf16 == 0 ]]; then
    echo "check-kernel-asm: no vdpbf16ps zmm in the CKernels objects (the bf16 kernel was not compiled for AVX-512 BF16)"
    status=1
fi
if [[ $spills != 0 ]]; then
    echo "check-kernel-asm: the bf16 micro-tile moves zmm registers to or from the stack ($spills times)"
    status=1
fi
if [[ $status == 0 ]]; then
    echo "check-kernel-asm: OK (${#objects[@]} objects; micro-kernel vfmadd ymm: $fma, Gemm vcvtph2ps: $cvt, bf16 vdpbf16ps zmm: $dpbf16, f32 block vfmadd zmm/ymm: $f32zmm/$f32ymm, int8 vpdpbusd zmm/ymm: $i8zmm/$i8ymm, vector math vfmadd ymm/zmm: $vmfma/$vm16fma)"
fi
exit $status

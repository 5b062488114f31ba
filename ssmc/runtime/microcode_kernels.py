"""Compiled (numba) kernels of the microcode engine: the interpreter of a decoded neuron program, and the
synapse stage of a sparse synapse group.

The interpreter runs a program's instruction words one by one, exactly as the ISA page says, over a tile
of up to TILE neurons of one sequence at a time: each instruction is one short loop over the tile's
registers (kept in a small local array, in L1), so the dispatch is paid once per tile, not per neuron,
and the registers never leave the cache; a tile runs all the steps of a chunk before the next tile (every
neuron's update reads only its own registers, ports and parameters); one call runs every class of a unit
(its classes' codes and members packed one after the other). The code comes in as an int64 array
[instructions, CODE_COLUMNS] (opcode, rd, ra, rb, aux, imm, rc, re) in this module's own opcode numbering
(`OP`), so the cached machine code does not depend on the ISA module's numbers; microcode_engine
translates, and replaces some instruction sequences by the superinstructions fma, addsat and emit2 (one
pass for a sequence of passes; microcode_engine._fuse says when).

What keeps each instruction's loop a vectorised AVX-512 loop (numba gives none of it by itself): the
loops index the register array and never slice it (a slice costs an atomic reference count, more than
a 128-lane loop), clip with selects (numba's int64 min and max are calls), read and write the ports,
state and messages through one slice per instruction with an index that starts at 0 (an index
`first + e` that could be negative becomes a gather), run a full tile with the literal trip count TILE,
and never write a row they read (an in-place instruction computes into the SCRATCH row, then copies).

Integer semantics are numpy's int64: + - * << wrap, >> is arithmetic (numba compiles them to the same
two's-complement machine operations).

Both kernels are compiled once per machine (`cache=True`: numba keeps the machine code in __pycache__
beside this file, or in a user cache directory where that is not writable) and release the GIL, so the
engine runs parts of a batch on several threads.
"""

from __future__ import annotations

import numba
import numpy as np

# this module's opcode numbers (the engine maps the ISA's names onto them); the last three are the
# engine's superinstructions (microcode_engine._fuse forms them from ISA instruction sequences)
OP = {
    name: i
    for i, name in enumerate(
        (
            "halt",
            "li",
            "mov",
            "in",
            "add",
            "sub",
            "mul",
            "addi",
            "shr",
            "shl",
            "rshr",
            "sat",
            "max",
            "min",
            "abs",
            "cgei",
            "mask",
            "lut",
            "bslt",
            "jmp",
            "emit",
            "fma",
            "addsat",
            "emit2",
        )
    )
}
HALT, LI, MOV, IN, ADD, SUB, MUL, ADDI, SHR, SHL, RSHR, SAT, MAX, MIN, ABS, CGEI, MASK, LUT, BSLT, JMP, EMIT = range(21)
# fma d a b c e sign sh: d <- rshr(a * b +- c * e, sh) (the ISA's mul, mul, add or sub, rshr; sh 0: no rshr)
# addsat d a b bits cnt sign: d <- sat(a +- b, bits), counting under cnt (add or sub, then sat)
# emit2 a b lane: emit a to lane, b to lane + 1
FMA, ADDSAT, EMIT2 = 21, 22, 23
CODE_COLUMNS = 8  # op, rd, ra, rb, aux, imm, rc, re (rc, re: fma's second product; addsat's sign in rc)
TILE = 128  # neurons a tile runs together: 26 registers x 128 x 8 bytes stay in a 32 KiB L1
N_REGS = 25  # r0..r7, s0..s7, p0..p7, z
SCRATCH = N_REGS  # the kernel's own row: an instruction that writes one of its sources computes into it first
ACC_LO, ACC_HI = -(1 << 31), (1 << 31) - 1
COUNTS = 4  # saturation counters: 0 none ("-"), 1 accumulator, 2 state, 3 message
NONZERO = COUNTS  # the counter after them: non-zero messages of the steps that carry a token (run_unit_chunk)


# The interpreter's helpers, one per instruction family (and the tile's loads and stores); numba inlines
# them into run_unit_chunk, so splitting them out costs no call per instruction. Each instruction's
# loop runs over `w` lanes: the literal TILE for a full tile (a fixed trip count LLVM vectorises without a
# remainder), the tile's size otherwise. No loop writes a row it reads (LLVM's overlap check would then
# take its scalar fallback): an instruction whose destination is a source writes SCRATCH, then copies.
_inline = numba.njit(cache=True, nogil=True, inline="always")


@_inline
def _clip(v, lo, hi):
    """min(max(v, lo), hi) as selects: numba's int64 min and max are calls, which no loop vectorises."""
    v = v if v > lo else lo
    return v if v < hi else hi


@_inline
def _load_tile(regs, params, state, states, b, first, k):
    """p0.. <- the tile's parameters; the state registers the code uses <- their values kept for sequence b."""
    for q in range(params.shape[0]):
        p_ = params[q, first : first + k]  # a slice: an index first + e would be a gather (see _run_update)
        for e in range(k):
            regs[16 + q, e] = p_[e]
    for s in states:
        st_ = state[s, b, first : first + k]
        for e in range(k):
            regs[8 + s, e] = st_[e]


@_inline
def _store_tile(regs, state, states, b, first, k):
    for s in states:
        st_ = state[s, b, first : first + k]
        for e in range(k):
            st_[e] = regs[8 + s, e]


@_inline
def _read_port(regs, d, ports, row, cols, bases, slot, synapse, first, w, counts):
    """`in`: every member's column of the slot is a real one (a zero read is folded)."""
    base = bases[slot]
    if base >= 0:  # the members' columns follow each other
        src_ = ports[row, base + first : base + first + w]
        for e in range(w):
            regs[d, e] = src_[e]
    else:
        col_ = cols[slot, first : first + w]
        for e in range(w):
            regs[d, e] = ports[row, col_[e]]
    if synapse:  # a synapse port: sat to 32 bits, counting under acc
        n_clip = 0
        for e in range(w):
            v = regs[d, e]
            n_clip += (v < ACC_LO) | (v > ACC_HI)
            regs[d, e] = _clip(v, ACC_LO, ACC_HI)
        counts[1] += n_clip


@_inline
def _saturate(regs, d, a, bits, counter, w, counts):
    """`sat`: clip to a signed `bits`-bit range (64: none), counting the clipped values."""
    if bits < 64:
        hi = (np.int64(1) << (bits - 1)) - 1
        lo_ = -hi - 1
        n_clip = 0
        for e in range(w):
            v = regs[a, e]
            n_clip += (v < lo_) | (v > hi)
            regs[d, e] = _clip(v, lo_, hi)
        counts[counter] += n_clip
    else:
        for e in range(w):
            regs[d, e] = regs[a, e]


@_inline
def _add_saturate(regs, d, a, b, negate, bits, counter, w, counts):
    """`addsat`: the sum (difference) wraps as `add` (`sub`) does, then the `sat` of it."""
    hi = (np.int64(1) << (bits - 1)) - 1
    lo_ = -hi - 1
    n_clip = 0
    if negate:
        for e in range(w):
            v = regs[a, e] - regs[b, e]
            n_clip += (v < lo_) | (v > hi)
            regs[d, e] = _clip(v, lo_, hi)
    else:
        for e in range(w):
            v = regs[a, e] + regs[b, e]
            n_clip += (v < lo_) | (v > hi)
            regs[d, e] = _clip(v, lo_, hi)
    counts[counter] += n_clip


@_inline
def _multiply_add(regs, d, a, b, c, f, negate, imm, w):
    """`fma`: two wrapping products, their wrapping sum or difference, then `rshr` by imm (0: none)."""
    if imm == 0:
        if negate:
            for e in range(w):
                regs[d, e] = regs[a, e] * regs[b, e] - regs[c, e] * regs[f, e]
        else:
            for e in range(w):
                regs[d, e] = regs[a, e] * regs[b, e] + regs[c, e] * regs[f, e]
    else:
        half = np.int64(1) << (imm - 1)
        if negate:
            for e in range(w):
                regs[d, e] = (regs[a, e] * regs[b, e] - regs[c, e] * regs[f, e] + half) >> imm
        else:
            for e in range(w):
                regs[d, e] = (regs[a, e] * regs[b, e] + regs[c, e] * regs[f, e] + half) >> imm


@_inline
def _lookup(regs, d, a, table, counter, w, counts):
    """`lut`: the table's entry, the index clipped to the table (counting the clipped ones)."""
    top = table.shape[0] - 1
    n_clip = 0
    for e in range(w):
        v = regs[a, e]
        if v < 0:
            v = 0
            n_clip += 1
        elif v > top:
            v = top
            n_clip += 1
        regs[d, e] = table[v]
    counts[counter] += n_clip


@_inline
def _shift(op, regs, d, a, imm, w):
    """`shr` (arithmetic), `shl` (wrapping) and `rshr` (round half up: add 2^(imm-1), then shift)."""
    if op == RSHR:
        if imm == 0:
            for e in range(w):
                regs[d, e] = regs[a, e]
        else:
            half = np.int64(1) << (imm - 1)
            for e in range(w):
                regs[d, e] = (regs[a, e] + half) >> imm
    elif op == SHR:
        for e in range(w):
            regs[d, e] = regs[a, e] >> imm
    else:
        for e in range(w):
            regs[d, e] = regs[a, e] << imm


@_inline
def _arith(op, regs, d, a, b, imm, w):
    """The register-to-register instructions that neither shift, clip nor count (int64, wrapping)."""
    if op == ADD:
        for e in range(w):
            regs[d, e] = regs[a, e] + regs[b, e]
    elif op == MUL:
        for e in range(w):
            regs[d, e] = regs[a, e] * regs[b, e]
    elif op == SUB:
        for e in range(w):
            regs[d, e] = regs[a, e] - regs[b, e]
    elif op == LI:
        for e in range(w):
            regs[d, e] = imm
    elif op == MOV:
        for e in range(w):
            regs[d, e] = regs[a, e]
    elif op == ADDI:
        for e in range(w):
            regs[d, e] = regs[a, e] + imm
    elif op == MAX:
        for e in range(w):
            x, y = regs[a, e], regs[b, e]
            regs[d, e] = x if x > y else y
    elif op == MIN:
        for e in range(w):
            x, y = regs[a, e], regs[b, e]
            regs[d, e] = x if x < y else y
    elif op == ABS:
        for e in range(w):
            v = regs[a, e]
            regs[d, e] = -v if v < 0 else v
    elif op == CGEI:
        for e in range(w):
            regs[d, e] = 1 if regs[a, e] >= imm else 0
    elif op == MASK:
        for e in range(w):
            regs[d, e] = regs[a, e] if regs[b, e] != 0 else 0


@_inline
def _emit(out, j, b, regs, a, comps, first, stride, lane, w):
    """`emit`: the tile's values to their compartments' lane (stride > 0: compartments evenly spaced)."""
    if stride > 0:
        o_ = out[j, b, comps[first] + lane :]
        for e in range(w):
            o_[e * stride] = regs[a, e]
    else:
        o_ = out[j, b]
        comp_ = comps[first : first + w]
        for e in range(w):
            o_[comp_[e] + lane] = regs[a, e]


@_inline
def _run_update(code, regs, table, comps, cols, bases, t, ports, row, out, j, b, first, stride, w, counts):
    """One update (step t) of the tile's neurons: the code from its first instruction to `halt`. The
    registers, ports and messages are indexed, never sliced: a slice of an array costs an atomic
    reference count in numba, more than a short instruction's loop."""
    pc = 0
    while True:
        op = code[pc, 0]
        d = code[pc, 1]
        a = code[pc, 2]
        rb = code[pc, 3]
        aux = code[pc, 4]
        imm = code[pc, 5]
        pc += 1
        if op == IN:
            _read_port(regs, d, ports, row, cols, bases, aux, rb, first, w, counts)
            continue
        if op == HALT:
            break
        if op == BSLT:
            if t < imm:
                pc = aux
            continue
        if op == JMP:
            pc = aux
            continue
        if op == EMIT:
            _emit(out, j, b, regs, a, comps, first, stride, imm, w)
            continue
        if op == EMIT2:
            if stride == 2 and imm == 0:  # lanes 0 and 1 of consecutive neuron pairs: interleaved
                o_ = out[j, b, comps[first] : comps[first] + 2 * w]
                for e in range(w):
                    o_[2 * e] = regs[a, e]
                    o_[2 * e + 1] = regs[rb, e]
            else:
                _emit(out, j, b, regs, a, comps, first, stride, imm, w)
                _emit(out, j, b, regs, rb, comps, first, stride, imm + 1, w)
            continue
        rc = code[pc - 1, 6]
        re = code[pc - 1, 7]
        if op == FMA:
            in_place = d == a or d == rb or d == rc or d == re
        elif op == ADDSAT or op == ADD or op == SUB or op == MUL or op == MAX or op == MIN or op == MASK:
            in_place = d == a or d == rb
        else:  # reads a at most (rb of a sat or lut is a counter)
            in_place = d == a
        rd = SCRATCH if in_place else d
        if op == FMA:
            _multiply_add(regs, rd, a, rb, rc, re, aux, imm, w)
        elif op == ADDSAT:
            _add_saturate(regs, rd, a, rb, rc, aux, imm, w, counts)
        elif op == SAT:
            _saturate(regs, rd, a, aux, rb, w, counts)
        elif op == SHR or op == SHL or op == RSHR:
            _shift(op, regs, rd, a, imm, w)
        elif op == LUT:
            _lookup(regs, rd, a, table, rb, w, counts)
        else:
            _arith(op, regs, rd, a, rb, imm, w)
        if in_place:
            for e in range(w):
                regs[d, e] = regs[SCRATCH, e]


@_inline
def _write_probes(probe_regs, probes, regs, comps, j, b, first, k):
    for p in range(probe_regs.shape[1]):
        reg, lane, kind = probe_regs[0, p], probe_regs[1, p], probe_regs[2, p]
        o_ = probes[kind, j, b]
        comp_ = comps[first : first + k]
        for e in range(k):
            o_[comp_[e] + lane] = regs[reg, e]


@_inline
def _run_class(
    code, params, table, comps, cols, bases, t0, n, batch, b_lo, b_hi, ports, state, states, temps, out, probe_regs,
    probes, counts, regs,
):  # fmt: skip
    """One class's members through steps t0 .. t0 + n - 1 for sequences [b_lo, b_hi) (see run_unit_chunk)."""
    members = comps.shape[0]
    for b in range(b_lo, b_hi):  # sequence-major: a tile's ports, messages and state are neighbours of the last's
        for first in range(0, members, TILE):
            k = min(TILE, members - first)
            comp_ = comps[first : first + k]  # > 0: the tile's compartments are evenly spaced
            stride = comp_[1] - comp_[0] if k > 1 else 1
            uneven = 0
            for e in range(1, k):
                uneven |= comp_[e] - comp_[e - 1] - stride
            if uneven:
                stride = -1
            _load_tile(regs, params, state, states, b, first, k)
            for j in range(n):
                for r in temps:  # temporaries start at zero every update (those the code may read first)
                    for e in range(k):
                        regs[r, e] = 0
                row, t = j * batch + b, t0 + j
                if k == TILE:  # the same code with a fixed trip count (see _inline)
                    _run_update(
                        code, regs, table, comps, cols, bases, t, ports, row, out, j, b, first, stride, TILE, counts
                    )
                else:
                    _run_update(
                        code, regs, table, comps, cols, bases, t, ports, row, out, j, b, first, stride, k, counts
                    )
                _write_probes(probe_regs, probes, regs, comps, j, b, first, k)
            _store_tile(regs, state, states, b, first, k)


@numba.njit(cache=True, nogil=True)
def run_unit_chunk(
    codes,  # int64 [instructions, CODE_COLUMNS]: every class's code, one after the other: op, rd, ra, rb, aux,
    # imm, rc, re (a branch's target counts from its class's first instruction)
    code_at,  # int64 [classes + 1]: where each class's code starts in codes
    member_at,  # int64 [classes + 1]: where each class's members start in the member arrays below
    params,  # int64 [params, members]: the members' parameter memory
    table,  # int64 [entries] (lut)
    comps,  # int64 [members]: each member's first compartment in the group (lo + neuron * lanes)
    cols,  # int64 [slots, members]: the port buffer column an `in` of its class's slot k reads for each member
    bases,  # int64 [classes, slots]: where a class's slot's columns are cols[slot, m0] + 0, 1, 2, ...; else -1
    t0,
    n,
    batch,
    b_lo,
    b_hi,  # the sequences [b_lo, b_hi) of the batch to run
    ports,  # int64 [n * batch, columns]: the chunk's port values, row j * batch + b
    state,  # int64 [8, batch, members]: s0..s7 of the members, kept from chunk to chunk
    states,  # int64: each class's state registers (0..7) the code uses, loaded and stored around the steps
    state_at,  # int64 [classes + 1]: where each class's start in states
    temps,  # int64: each class's temporaries (0..7) the code may read before writing, zeroed before every update
    temp_at,  # int64 [classes + 1]
    out,  # int64 [n, batch, size]: the messages (zero where nothing is emitted)
    probe_regs,  # int64 [probes]: register, lane, output index of each probe (rows 0, 1, 2)
    probes,  # int64 [kinds, n, batch, size]
    counts,  # int64 [COUNTS + 1]: the saturation counters, then NONZERO
    lo,
    hi,  # the unit's compartments [lo, hi) of the group
    j_lo,
    j_hi,  # the chunk's steps [j_lo, j_hi) that carry a token: their non-zero messages are counted
):
    """Every class of a unit (neurons that run the same specialised code) in one call, a class after the
    other: the members of each class are a run of the member arrays (microcode_engine._pack_classes).
    Then the unit's non-zero messages of the steps that carry a token are counted (for the sparsity; here
    the count is a pass over what is still in cache, and not a NumPy call with the GIL held)."""
    regs = np.zeros((N_REGS + 1, TILE), np.int64)
    for c in range(code_at.shape[0] - 1):
        m0, m1 = member_at[c], member_at[c + 1]
        _run_class(
            codes[code_at[c] : code_at[c + 1]], params[:, m0:m1], table, comps[m0:m1], cols[:, m0:m1], bases[c],
            t0, n, batch, b_lo, b_hi, ports, state[:, :, m0:m1], states[state_at[c] : state_at[c + 1]],
            temps[temp_at[c] : temp_at[c + 1]], out, probe_regs, probes, counts, regs,
        )  # fmt: skip
    nonzero = 0
    for j in range(j_lo, j_hi):
        for b in range(b_lo, b_hi):
            o_ = out[j, b, lo:hi]
            for e in range(hi - lo):
                nonzero += o_[e] != 0
    counts[NONZERO] += nonzero


@_inline
def _shifted(acc, shift, clip):
    """shr(acc, shift) for shift > 0; for shift < 0 a left shift after the clip (see sparse_synapse_chunk)."""
    if shift > 0:
        return acc >> shift
    if shift < 0:
        return min(max(acc, -clip), clip) << -shift
    return acc


@numba.njit(cache=True, nogil=True)
def sparse_synapse_chunk(
    ring,  # int64 [ring rows, batch, pre]: the pre group's messages
    start,  # the ring row of the chunk's first step's input (t0 - delay)
    n,
    batch,
    b_lo,
    b_hi,  # the sequences [b_lo, b_hi) of the batch to form
    indptr,  # int64 [posts + 1]: the terms of each non-zero post row
    cols,  # int64 [terms]: pre index of each term
    vals,  # int64 [terms]: weight of each term
    firsts,  # int64 [posts]: a row's first pre index where its terms' are consecutive (cols[k] = firsts[q] + k -
    # indptr[q]: a segment sum, no gather), else -1
    runs,  # int64 [runs + 1]: where every row has one term, the first row of each run of rows that read the
    # same pre index (a broadcast: one load a run, no gather), and posts; else empty
    shifts,  # int64 [posts]: > 0: arithmetic right shift of the row's sum; < 0: left shift (after a clip, below)
    sigma,  # int64 [batch, posts] running sums (the pre group sends sigma-delta) or [0, 0]
    ports,  # int64 [n * batch, columns]: the outputs go to columns col0 .. col0 + posts - 1, row j * batch + b
    col0,
):
    """shr(W @ m[t - delay], -weight_exp) (of the running sum of W @ m for a sigma synapse) for each
    non-zero row of W, before the 32-bit sat (the reading `in` sats and counts). The sum is exact int64
    (wrapping as numpy's int64 matmul does: the same integers in any order, and a zero weight adds 0).
    Before a left shift the sum is clipped to +-(2^30 + 1): every sum that would saturate still does, to
    the same bound, and nothing overflows. Each output is written once (the port buffer is the largest
    thing the stage touches); one-term rows (no sigma sum) take one fused pass, by runs of rows reading
    the same pre value where there are runs, vectorised where every shift is a right shift."""
    rows = ring.shape[0]
    posts = indptr.shape[0] - 1
    use_sigma = sigma.shape[0] > 0
    clip = (np.int64(1) << 30) + 1
    one_term = indptr[posts] == posts and not use_sigma
    right = True  # every shift is a right shift (or none)
    for q in range(posts):
        right &= shifts[q] >= 0
    for j in range(n):
        src = (start + j) % rows
        for b in range(b_lo, b_hi):
            m_ = ring[src, b]
            o_ = ports[j * batch + b, col0 : col0 + posts]
            if one_term and runs.shape[0] > 0:  # a broadcast: one fused pass a run
                for r in range(runs.shape[0] - 1):
                    lo, hi = runs[r], runs[r + 1]
                    v = m_[cols[lo]]
                    v_ = vals[lo:hi]
                    s_ = shifts[lo:hi]
                    w_ = o_[lo:hi]
                    if right:
                        for q in range(hi - lo):
                            w_[q] = (v_[q] * v) >> s_[q]
                    else:
                        for q in range(hi - lo):
                            w_[q] = _shifted(v_[q] * v, s_[q], clip)
                continue
            if one_term:  # a gather
                if right:
                    for q in range(posts):
                        o_[q] = (vals[q] * m_[np.uint64(cols[q])]) >> shifts[q]
                else:
                    for q in range(posts):
                        o_[q] = _shifted(vals[q] * m_[np.uint64(cols[q])], shifts[q], clip)
                continue
            for q in range(posts):
                lo, hi = indptr[q], indptr[q + 1]
                acc = np.int64(0)
                first = firsts[q]
                if first >= 0:  # consecutive columns: a vectorised dot product
                    v_ = vals[lo:hi]
                    w_ = m_[first : first + hi - lo]
                    for k in range(hi - lo):
                        acc += v_[k] * w_[k]
                else:
                    for k in range(lo, hi):
                        acc += vals[k] * m_[cols[k]]
                if use_sigma:
                    sigma[b, q] += acc
                    acc = sigma[b, q]
                o_[q] = _shifted(acc, shifts[q], clip)

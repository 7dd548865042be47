; gemm_bias_relu_f16.asm: C[M,N] (f16) = relu(A[M,K] x B[K,N] + bias[N]), with
; f16 inputs, f32 accumulation and an f32 bias; the epilogue is fused, so the
; accumulators never round-trip through GM.
;
; Arguments:  r1 = A, r2 = B, r3 = C (f16), r7 = bias (f32, N entries)
;             r4 = M, r5 = N, r6 = K (all >= 1)
;
; The main loop is gemm_f16.asm's (read that header first). Instead of MTE3
; draining L0C straight to GM, the Vector pipe copies the finished tile from
; L0C into the UB (f32), adds the bias row and applies ReLU row by row, casts
; to f16, and MTE3 stores the f16 tile. MTE2 loads the tile's bias slice into
; the UB at the start of each N tile.
; UB map: 0 = f32 tile (64 KiB), 65536 = f16 tile (32 KiB), 98304 = bias (512 B).

.alias ZERO   r0
.alias A      r1
.alias B      r2
.alias C      r3
.alias M      r4
.alias N      r5
.alias K      r6
.alias BIAS   r7
.alias KB     r8      ; number of 128-wide k-blocks
.alias M0     r9
.alias N0     r10
.alias KI     r11     ; k-block index
.alias MR     r12     ; real rows in this tile
.alias MP     r13     ; rows padded to 16
.alias NR     r14
.alias NP     r15
.alias KR     r16
.alias KP     r17
.alias RELOAD r18     ; 1 when the A panel does not fit in L1
.alias L0S    r19     ; L0A/L0B slot (0/1)
.alias CS     r20     ; L0C slot (0/1)
.alias BS     r21     ; B ring slot (0..3)
.alias K0     r22
.alias ASLOT  r23     ; L1 address of this k-block's A slot
.alias T      r24
.alias BSLOT  r25
.alias L0ADDR r26
.alias ABASE  r27     ; A ring position of k-block 0
.alias T2     r28
.alias KT     r29
.alias INIT   r30
.alias CADDR  r31
; Epilogue names for registers the K loop recomputes anyway.
.alias EI     r22
.alias EACC   r23
.alias EOUT   r25
.alias EBIAS  r28

.equ BLK 128
.equ B_RING 262144    ; L1 offset of the B slots
.equ UB_OUT 65536
.equ UB_BIAS 98304

    LI ZERO, 0
    ADDI KB, K, 127
    SHRI KB, KB, 7
    LI RELOAD, 0
    LI T, 8
    BGE T, KB, setup
    LI RELOAD, 1
setup:
    ; One "free" token per slot of each ring.
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 0
    SET_FLAG MTE1, MTE2, 1
    SET_FLAG MTE1, MTE2, 1
    SET_FLAG MTE1, MTE2, 1
    SET_FLAG MTE1, MTE2, 1
    SET_FLAG CUBE, MTE1, 0
    SET_FLAG CUBE, MTE1, 0
    SET_FLAG VEC, CUBE, 0
    SET_FLAG VEC, CUBE, 0
    SET_FLAG VEC, MTE2, 1
    SET_FLAG MTE3, VEC, 0
    LI L0S, 0
    LI CS, 0
    LI BS, 0
    LI ABASE, 0
    LI M0, 0
m_loop:
    SUB MR, M, M0
    MINI MR, MR, BLK
    ADDI MP, MR, 15
    ANDI MP, MP, -16
    LI N0, 0
n_loop:
    SUB NR, N, N0
    MINI NR, NR, BLK
    ADDI NP, NR, 15
    ANDI NP, NP, -16
    ; ---- MTE2: this tile's bias slice into the UB
    WAIT_FLAG VEC, MTE2, 1
    SHLI T, N0, 2
    ADD T, T, BIAS
    LI T2, 1
    LI KT, UB_BIAS
    DMA GM->UB f32 KT, T, T2, NR, NR, NP, T2, NP
    SET_FLAG MTE2, VEC, 1
    LI KI, 0
k_loop:
    SHLI K0, KI, 7
    SUB KR, K, K0
    MINI KR, KR, BLK
    ADDI KP, KR, 15
    ANDI KP, KP, -16
    ADD ASLOT, ABASE, KI
    ANDI ASLOT, ASLOT, 7
    SHLI ASLOT, ASLOT, 15
    ; ---- MTE2: A k-block (first N tile, or always when reloading)
    BNE N0, ZERO, a_check
a_load:
    WAIT_FLAG MTE1, MTE2, 0
    MUL T, M0, K
    ADD T, T, K0
    SHLI T, T, 1
    ADD T, T, A
    DMA GM->L1 f16 ASLOT, T, MR, KR, K, KP, MP, KP
    SET_FLAG MTE2, MTE1, 0
    JMP a_done
a_check:
    BNE RELOAD, ZERO, a_load
a_done:
    ; ---- MTE2: B k-block into the next ring slot
    WAIT_FLAG MTE1, MTE2, 1
    SHLI BSLOT, BS, 15
    ADDI BSLOT, BSLOT, B_RING
    MUL T, K0, N
    ADD T, T, N0
    SHLI T, T, 1
    ADD T, T, B
    DMA GM->L1 f16 BSLOT, T, KR, NR, N, NP, KP, NP
    SET_FLAG MTE2, MTE1, 1
    ; ---- MTE1: fill the free L0A/L0B slot
    WAIT_FLAG CUBE, MTE1, 0
    BNE N0, ZERO, aw_check
a_wait:
    WAIT_FLAG MTE2, MTE1, 0
    JMP aw_done
aw_check:
    BNE RELOAD, ZERO, a_wait
aw_done:
    SHLI L0ADDR, L0S, 15
    DMA L1->L0A f16 L0ADDR, ASLOT, MP, KP, KP, KP, MP, KP
    ; The A slot is free after the last N tile reads it (or at once when reloading).
    ADDI T2, N0, BLK
    BGE T2, N, a_release
    BNE RELOAD, ZERO, a_release
    JMP a_rel_done
a_release:
    SET_FLAG MTE1, MTE2, 0
a_rel_done:
    WAIT_FLAG MTE2, MTE1, 1
    DMA L1->L0B f16 L0ADDR, BSLOT, KP, NP, NP, NP, KP, NP
    SET_FLAG MTE1, MTE2, 1
    SET_FLAG MTE1, CUBE, 0
    ; ---- Cube: accumulate into the tile's L0C slot (init on the first k-block)
    BNE KI, ZERO, c_ready
    WAIT_FLAG VEC, CUBE, 0
c_ready:
    WAIT_FLAG MTE1, CUBE, 0
    SHRI T, MP, 4
    SHRI T2, NP, 4
    SHRI KT, KP, 4
    MINI INIT, KI, 1
    XORI INIT, INIT, 1
    SHLI CADDR, CS, 16
    MMA f16->f32 CADDR, L0ADDR, L0ADDR, T, T2, KT, INIT
    SET_FLAG CUBE, MTE1, 0
    XORI L0S, L0S, 1
    ADDI BS, BS, 1
    ANDI BS, BS, 3
    ADDI KI, KI, 1
    BLT KI, KB, k_loop
    ; ---- Vector: L0C -> UB, + bias, ReLU, cast to f16
    SET_FLAG CUBE, VEC, 0
    WAIT_FLAG CUBE, VEC, 0
    WAIT_FLAG MTE3, VEC, 0
    LI T, 0
    DMA L0C->UB f32 T, CADDR, MR, NP, NP, NP, MR, NP
    SET_FLAG VEC, CUBE, 0
    WAIT_FLAG MTE2, VEC, 1
    LI EI, 0
    LI EACC, 0
    LI EOUT, UB_OUT
    LI EBIAS, UB_BIAS
ep_row:
    VADD f32 EACC, EACC, EBIAS, NR
    VRELU f32 EACC, EACC, NR
    VCAST f32->f16 EOUT, EACC, NR
    SHLI T, NP, 2
    ADD EACC, EACC, T
    SHLI T, NP, 1
    ADD EOUT, EOUT, T
    ADDI EI, EI, 1
    BLT EI, MR, ep_row
    SET_FLAG VEC, MTE2, 1
    SET_FLAG VEC, MTE3, 0
    ; ---- MTE3: store the f16 tile
    WAIT_FLAG VEC, MTE3, 0
    MUL T, M0, N
    ADD T, T, N0
    SHLI T, T, 1
    ADD T, T, C
    LI T2, UB_OUT
    DMA UB->GM f16 T, T2, MR, NR, NP, N, MR, NR
    SET_FLAG MTE3, VEC, 0
    XORI CS, CS, 1
    BEQ RELOAD, ZERO, n_next
    ADD ABASE, ABASE, KB
n_next:
    ADDI N0, N0, BLK
    BLT N0, N, n_loop
    BNE RELOAD, ZERO, m_next
    ADD ABASE, ABASE, KB
m_next:
    ADDI M0, M0, BLK
    BLT M0, M, m_loop
    HALT

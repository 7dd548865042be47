; gemm_f16.asm: C[M,N] (f16) = A[M,K] (f16) x B[K,N] (f16), accumulated in f32.
;
; Arguments:  r1 = A, r2 = B, r3 = C (GM byte addresses, row-major, dense)
;             r4 = M, r5 = N, r6 = K (all >= 1; any values, not only tile multiples)
;
; Blocking. C is cut into 128x128 tiles, each accumulated in one of two L0C
; slots across the whole K loop (64 KiB each). K is walked in 128-wide blocks.
; - L1 holds the A panel of the current 128-row block in up to 8 k-block slots
;   (8 x 32 KiB); when K <= 1024 it is loaded once per row block and reused by
;   every N tile, so GM traffic for A is paid once. Larger K reloads A per tile.
; - B k-blocks stream through 4 L1 slots (4 x 32 KiB).
; - L0A/L0B are split into two 32 KiB slots each, so MTE1 fills one while the
;   Cube works on the other; L0C has two slots so MTE3 drains one tile while
;   the Cube accumulates the next.
; Every buffer ring is guarded by a pair of counting flags: a "full" flag from
; producer to consumer and a "free" flag back, pre-set once per slot.
; Edge tiles: DMA pads rows/columns to multiples of 16 with zeros on the way
; into L1, and the write-back copies only the real rows and columns.

.alias ZERO   r0
.alias A      r1
.alias B      r2
.alias C      r3
.alias M      r4
.alias N      r5
.alias K      r6
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

.equ BLK 128
.equ B_RING 262144    ; L1 offset of the B slots

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
    SET_FLAG MTE3, CUBE, 0
    SET_FLAG MTE3, CUBE, 0
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
    WAIT_FLAG MTE3, CUBE, 0
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
    ; ---- MTE3: write the tile back as f16 (real rows and columns only)
    SET_FLAG CUBE, MTE3, 0
    WAIT_FLAG CUBE, MTE3, 0
    MUL T, M0, N
    ADD T, T, N0
    SHLI T, T, 1
    ADD T, T, C
    DMA L0C->GM f32->f16 T, CADDR, MR, NR, NP, N, MR, NR
    SET_FLAG MTE3, CUBE, 0
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

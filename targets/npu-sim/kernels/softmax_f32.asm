; softmax_f32.asm: row softmax, Y[i, :] = exp(X[i, :] - max X[i, :]) / sum(...).
;
; Arguments:  r1 = X, r2 = Y (GM byte addresses, f32, row-major M x N, dense)
;             r4 = M, r5 = N (M >= 1, 1 <= N <= 32768)
;
; Rows are processed in blocks that fill 128 KiB of the UB. Each row is stored
; with its length padded to 8 floats (32 bytes) so every row starts on the UB's
; 32-byte alignment; the vector ops only touch the N real elements. Per-row
; scalars (max, then 1/sum) live in 32-byte slots after the row block.
; MTE2 loads a block, the Vector pipe normalises it row by row, MTE3 stores it;
; a flag from MTE3 back to MTE2 keeps the next load from overwriting the block
; before it has been stored.

.alias ZERO  r0
.alias X     r1
.alias Y     r2
.alias M     r4
.alias N     r5
.alias NP    r6     ; N padded to 8
.alias ROWB  r7     ; bytes per UB row
.alias RB    r8     ; rows per block
.alias R0    r9     ; first row of the block
.alias RN    r10    ; rows in this block
.alias T     r11
.alias UBX   r12
.alias I     r13
.alias ROW   r14
.alias SCAL  r15
.alias ONE   r16

.equ BLOCK_BYTES 131072
.equ MAX_ROWS 1024

    LI ZERO, 0
    LI ONE, 1
    LI UBX, 0
    ADDI NP, N, 7
    ANDI NP, NP, -8
    SHLI ROWB, NP, 2
    LI RB, BLOCK_BYTES
    DIV RB, RB, ROWB
    MINI RB, RB, MAX_ROWS
    ; A row longer than the block still gets one row per block; its DMA then
    ; fails the UB bounds check instead of looping forever.
    MAXI RB, RB, 1
    SET_FLAG MTE3, MTE2, 0
    LI R0, 0
block:
    SUB RN, M, R0
    MIN RN, RN, RB
    WAIT_FLAG MTE3, MTE2, 0
    MUL T, R0, N
    SHLI T, T, 2
    ADD T, T, X
    DMA GM->UB f32 UBX, T, RN, N, N, NP, RN, NP
    SET_FLAG MTE2, VEC, 0
    WAIT_FLAG MTE2, VEC, 0
    LI I, 0
    LI ROW, 0
    LI SCAL, BLOCK_BYTES
row:
    VREDMAX f32 SCAL, ROW, N
    VSUBS f32 ROW, ROW, SCAL, N
    VEXP f32 ROW, ROW, N
    VREDSUM f32 SCAL, ROW, N
    VRECIP f32 SCAL, SCAL, ONE
    VMULS f32 ROW, ROW, SCAL, N
    ADD ROW, ROW, ROWB
    ADDI SCAL, SCAL, 32
    ADDI I, I, 1
    BLT I, RN, row
    SET_FLAG VEC, MTE3, 0
    WAIT_FLAG VEC, MTE3, 0
    MUL T, R0, N
    SHLI T, T, 2
    ADD T, T, Y
    DMA UB->GM f32 T, UBX, RN, N, NP, N, RN, N
    SET_FLAG MTE3, MTE2, 0
    ADD R0, R0, RN
    BLT R0, M, block
    HALT

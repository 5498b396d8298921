/* test_optim_f32.c - test_optim.c's torch.optim.AdamW replay in the default float32 build (the float32 runs of
   tests/data/optim/adamw.json). */
#define TEST_OPTIM_F32
#include "test_optim.c"

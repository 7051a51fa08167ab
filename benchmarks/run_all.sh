#!/usr/bin/env bash
# The exact commands behind benchmarks/RESULTS.md, in the order they were run. Run from the repository
# root after `pip install -e ".[bench]"`. Each `sfplus bench` call resumes the runs already in its --out
# folder (finished runs are read back from --out/runs/) and adds what its options ask for.
set -euo pipefail

# 1. The corpus: six public-domain texts from pinned Debian packages (~30 MB of bytes).
sfplus data fetch

# 2. The quality benchmark: ScheduleFree+ (the lab's fixed default) against swept AdamW-WSD / cosine /
#    linear decay and Schedule-Free AdamW at 20, 100 and 1000 tokens per parameter (a 6.6k-param model).
sfplus bench --data debian --out benchmarks/results/quality_cpu_debian
#    ... a second seed for every baseline's best LR at 1000 tokens/param,
sfplus bench --data debian --out benchmarks/results/quality_cpu_debian \
    --long-seed-baselines adamw-wsd adamw-cosine adamw-linear sf-adamw
#    ... and four seeds for ScheduleFree+ and for the best LRs at 20 and 100.
sfplus bench --data debian --out benchmarks/results/quality_cpu_debian --seeds 4 --long-seed-baselines

# 3. A 20k-param model at the two short budgets only.
sfplus bench --data debian --sizes 20k --budgets 20 100 --out benchmarks/results/quality_cpu_debian_20k
#    ... one more grid point allowed at 100 (linear decay's best was on the edge) and a second seed at 100.
sfplus bench --data debian --sizes 20k --budgets 20 100 --out benchmarks/results/quality_cpu_debian_20k \
    --long-max-extensions 3 --long-seed-baselines adamw-wsd adamw-cosine adamw-linear sf-adamw

# 4. A 48k-param model at the two short budgets (the baselines' grid starts at the smaller sizes' optima).
sfplus bench --data debian --sizes 50k --budgets 20 100 --lr-grid 4 5 6 --out benchmarks/results/quality_cpu_debian_50k

# 5. The step benchmark: one optimizer step at ~1M, 15M and 100M parameters in GPT-like shapes.
python benchmarks/optimizer_step.py --sizes 1m 15m 100m --repeats 15 --max-gb 9 \
    --out "benchmarks/results/step_cpu_$(date -u +%Y%m%dT%H%M).json"

# --- second session ---
# 6. The library's gamma = 1 with as many seeds as the lab's configuration, at every size so far.
sfplus bench --data debian --sizes 50k --budgets 20 100 --lr-grid 4 5 6 --extra-seeds 2 \
    --out benchmarks/results/quality_cpu_debian_50k
sfplus bench --data debian --sizes 20k --budgets 20 100 --long-max-extensions 3 \
    --long-seed-baselines adamw-wsd adamw-cosine adamw-linear sf-adamw --extra-seeds 2 \
    --out benchmarks/results/quality_cpu_debian_20k
sfplus bench --data debian --out benchmarks/results/quality_cpu_debian --seeds 4 --long-seed-baselines --extra-seeds 4

# 7. Weight-decay diagnostics at gamma = 1 on the 6k model (one seed each).
sfplus bench --data debian --out benchmarks/results/quality_cpu_debian --seeds 4 --long-seed-baselines \
    --sfplus-extra sfplus-gamma1 sfplus-gamma1-wd0 sfplus-gamma1-wd1 sfplus-gamma1-wd20 sfplus-gamma1-wd50 \
    --extra-seeds 1

# 8. 1000 tokens/param at 20k params, in a folder seeded with the 20k runs so their short budgets are reused.
mkdir -p benchmarks/results/quality_cpu_debian_20k_1000
cp -rn benchmarks/results/quality_cpu_debian_20k/runs benchmarks/results/quality_cpu_debian_20k_1000/
sfplus bench --data debian --sizes 20k --budgets 20 100 1000 --extra-seeds 2 \
    --out benchmarks/results/quality_cpu_debian_20k_1000
#    ... two more gamma = 1 seeds (its first two disagreed), then a second seed for every baseline's best LR.
sfplus bench --data debian --sizes 20k --budgets 20 100 1000 --extra-seeds 4 --workers 1 \
    --out benchmarks/results/quality_cpu_debian_20k_1000
sfplus bench --data debian --sizes 20k --budgets 20 100 1000 --extra-seeds 4 \
    --long-seed-baselines adamw-wsd adamw-cosine adamw-linear sf-adamw \
    --out benchmarks/results/quality_cpu_debian_20k_1000

# 9. A 96k-param model at the two short budgets.
sfplus bench --data debian --sizes 100k --budgets 20 100 --lr-grid 3 4 5 --extra-seeds 2 \
    --out benchmarks/results/quality_cpu_debian_100k

# 10. The step at 15.6M against fused AdamW and Schedule-Free AdamW, and what each pass of it reads.
python benchmarks/optimizer_step.py --sizes 15m --methods adamw-fused sf-adamw sfplus-default --repeats 30 \
    --out "benchmarks/results/step_cpu_15m_$(date -u +%Y%m%dT%H%M).json"
python benchmarks/step_floor.py --size 15m --repeats 20

# 11. Third session: the robust default against the committed tuned baselines, and the robustness suite.
for pair in "quality_cpu_debian rerun_6k" "quality_cpu_debian_20k_1000 rerun_20k" \
            "quality_cpu_debian_50k rerun_50k" "quality_cpu_debian_100k rerun_100k"; do
    set -- $pair
    python benchmarks/sfplus_rerun.py "benchmarks/results/$1/results.json" --configs sfplus --seeds 4 \
        --out "benchmarks/results/$2"
done
python -m sfplus_lab.robust --out benchmarks/results/robust_cpu

# 12. Fourth session: the default without beta annealing (and the previous one beside it at 6.6k), the
#     suite for both, and the probes of the short budgets (their commands are in each folder's command.txt).
python benchmarks/sfplus_rerun.py benchmarks/results/quality_cpu_debian/results.json \
    --configs sfplus sfplus-anneal1000 --seeds 4 --out benchmarks/results/rerun2_6k
for pair in "quality_cpu_debian_20k_1000 rerun2_20k" "quality_cpu_debian_50k rerun2_50k" \
            "quality_cpu_debian_100k rerun2_100k"; do
    set -- $pair
    python benchmarks/sfplus_rerun.py "benchmarks/results/$1/results.json" --configs sfplus --seeds 4 \
        --out "benchmarks/results/$2"
done
python benchmarks/sfplus_rerun.py benchmarks/results/quality_cpu_debian/results.json \
    --variant 'c-warmup0={"c_warmup": 0}' --configs sfplus c-warmup0 --seeds 4 --out benchmarks/results/probes_6k_1000
python -m sfplus_lab.robust --out benchmarks/results/robust_v2 --configs default default-anneal1000 --no-adamw
for dir in probes_6k probes_20k; do bash -c "$(cat benchmarks/results/$dir/command.txt)"; done

# 13. Fifth session: the default without a warm start and with inner momentum 0.5 (the fourth session's beside it,
#     as sfplus-cw100-b0.8), the benchmark's 48k model with the trainer's batch shape (16 x 128 instead of
#     32 x 64), the suite for both defaults, and the probes (their command is in each folder's command.txt).
#     "sfplus" in a command of an earlier section meant the default of that day; a variant's JSON is over it.
sfplus bench --data debian --sizes 50k --budgets 20 100 --lr-grid 3 4 5 --batch-size 16 --seq-len 128 --workers 1 \
    --seeds 4 --sfplus-extra --long-seed-baselines adamw-cosine adamw-linear \
    --out benchmarks/results/quality_cpu_debian_50k_16x128
for pair in "quality_cpu_debian rerun4_6k" "quality_cpu_debian_20k_1000 rerun4_20k" \
            "quality_cpu_debian_50k rerun4_50k" "quality_cpu_debian_100k rerun4_100k" \
            "quality_cpu_debian_50k_16x128 rerun4_50k_16x128"; do
    set -- $pair
    python benchmarks/sfplus_rerun.py "benchmarks/results/$1/results.json" --configs sfplus sfplus-cw100-b0.8 \
        --seeds 4 --out "benchmarks/results/$2"
done
python -m sfplus_lab.robust --out benchmarks/results/robust_v4 --configs default default-cw100-b0.8 --no-adamw
bash benchmarks/results/probes5_6k/command.txt    # both probe folders (6.6k and 20k, <= 100 tokens/param)

# 14. Sixth session: the headline cells with as many seeds on both sides (8 of the default, 4-8 of the best tuned
#     baselines), five more probes at 6.6k, the loss-floor probe and the late-step analysis, and the step with its
#     scalar schedule compiled (run on a quiet machine; it needs a worktree of 6080282 at $BEFORE).
for dir in seeds_headline seeds_headline_6k seeds_headline_20k probes8_6k probes10_6k probes11_20k; do
    bash benchmarks/results/$dir/command.txt
done
python -m sfplus_lab.robust --out benchmarks/results/robust_v5 --configs default --no-adamw
BEFORE=/path/to/worktree-at-6080282 bash benchmarks/results/step_cpu_scalar_20261129/run_quiet.sh 2_quiet

# 15. Seventh session: where the 20k / 1000 spread comes from. Schedule-Free AdamW with 8 seeds there (its
#     command is the last line of seeds_headline/command.txt), the probes (decay, gamma, inner momentum, the ratio
#     bound with 8 seeds), the default with 16 seeds, the seed swap (initialisation against batches), and a
#     shorter warmup at 48k and 96k and on the suite (probes17_100k's command makes probes17_50k and robust_w25 too).
for dir in probes12_20k probes13_20k probes14_20k probes16_20k seeds16_20k seed_swap_20k probes17_100k; do
    bash benchmarks/results/$dir/command.txt
done

# 16. Eighth session: what makes the 20k / 1000 spread (the seeds over a run, every seed on one prescribed step-size
#     path, the ratio bound at R = 0.1) and 48k at 1000 tokens per parameter against tuned Schedule-Free AdamW.
for dir in quality_cpu_debian_50k_1000 seed_spread_20k seed_spread_50k late_alpha_20k fixed_alpha_20k probes19_20k; do
    bash benchmarks/results/$dir/command.txt
done

# 17. Ninth session: as many seeds on both sides. Schedule-Free AdamW's seeds 8-15 at 20k / 1000 (the last command of
#     seeds_headline/command.txt), 16 seeds of it at 6.6k and 20k at 20 and 100 tokens/param, 48k / 1000 and 96k
#     with 8 seeds a side, the constant step as its own update (the last command of fixed_alpha_20k/command.txt),
#     and the tables made from them.
for dir in seeds_short quality_cpu_debian_50k_1000_8seeds seeds_100k seeds8_100k seed_spread_20k_s16 seed_spread_100k \
           matched_seeds probes20_100k probes20_20k probes20_6k; do
    bash benchmarks/results/$dir/command.txt
done

# 18. Tenth session: the ratio bound at R = 0.5 (the new default) and 0.25 on the suite, the quickstart (three seeds,
#     with tuned baselines beside it) and the 1M model at 5 tokens/param; R = 0.5 at 96k and 48k with 8 seeds, at 6.6k
#     and 20k with 8 and 16 (the sixth and seventh sessions' runs reused), and the table made from them. The
#     probes21_* commands name the variant explicitly, so they give the same runs before and after the change.
python -m sfplus_lab.robust --out benchmarks/results/robust_r025 --configs default-ratio0.25 --no-adamw
python -m sfplus_lab.robust --out benchmarks/results/robust_r05 --configs default-ratio0.5 --no-adamw
for dir in quickstart_ratio m1_5tpp probes21_100k probes21_50k probes21_6k probes21_20k matched_seeds_r05; do
    bash benchmarks/results/$dir/command.txt
done

# 19. Eleventh session: 16 seeds a side at 6.6k / 1000 and 48k / 20 (R = 0.5), P_1 by model size (6.6k-100M), the
#     10M GPT with and without the ratio bound beside tuned Schedule-Free AdamW, then the bound off (the new default)
#     on the quickstart, the suite and the benchmark's cells. Every command names the bound explicitly.
python -m sfplus_lab.robust --out benchmarks/results/robust_noratio --configs default-no-ratio --no-adamw
for dir in probes22_6k probes22_50k_20 seeds_r05x matched_seeds_r05b first_polyak m10_ratio quickstart_noratio \
           probes23_6k probes23_20k probes23_50k probes23_100k matched_seeds_noratio; do
    bash benchmarks/results/$dir/command.txt
done
# The lead for the next default: no ratio bound and a 200-step warmup.
python -m sfplus_lab.robust --out benchmarks/results/robust_w200 --configs default-warmup200 --no-adamw
for dir in probes24_6k probes24_20k probes24_50k probes24_100k matched_seeds_w200 w200_lead; do
    bash benchmarks/results/$dir/command.txt
done

# 20. Twelfth session: no ratio bound and a 200-step warmup (the new default) with 8 seeds at every cell (seeds 0-3
#     are probes24_*'s runs, copied into each runs/ first) and at 48k / 1000, the quickstart with 3 seeds, the 10M GPT
#     for 600 steps, and short fine-tunes. Every benchmark command names the warmup and the bound explicitly.
for dir in probes25_6k probes25_20k probes25_50k probes25_100k probes25_50k_1000 matched_seeds_w200b quickstart_w200 \
           m10_600 short_finetune; do
    bash benchmarks/results/$dir/command.txt
done

# 21. Thirteenth session: where the 20k seeds part. Every step of the first 981 / 400 / 322 steps of 16 seeds at 20k
#     and 6.6k (benchmarks/early_steps.py), the diagnostics (alpha capped, a smaller decay, a longer warmup, a slower
#     growth bound), polyak_beta 0.999 at 20k / 1000 (8 seeds), on the quickstart, the suite and the 10M GPT, and the
#     2% growth bound on the suite, the 10M GPT (300 steps) and at 20k / 1000 (4 seeds). The default is unchanged.
python -m sfplus_lab.robust --out benchmarks/results/robust_pb999 --configs default-pb999 --no-adamw
python -m sfplus_lab.robust --out benchmarks/results/robust_growth002 --configs default-growth0.02 --no-adamw
for dir in early_20k early_20k_diag early_20k_wd early_6k pb999_20k quickstart_pb999 m10_pb999 m10_growth002 \
           growth002_20k; do
    bash benchmarks/results/$dir/command.txt
done

# 22. Fourteenth session: inner momentum 0.3 (the new default). The 20k screens of beta1 (400 steps, 16 seeds; 196
#     steps, 48 seeds), the benchmark's cells (16 seeds at 6.6k and 20k, 8 at 48k / 20, 4 at 48k / 100 and 96k / 20),
#     the suite, the quickstart and the 10M GPT (300 and 600 steps). Every command names the inner momentum explicitly.
python -m sfplus_lab.robust --out benchmarks/results/robust_b03 --configs default-b0.3 --no-adamw
for dir in early_20k_betas early_20k_48seeds probes26_6k probes26_20k probes26_50k probes26_50k_100 probes26_100k \
           matched_seeds_b03 quickstart_b03 m10_b03; do
    bash benchmarks/results/$dir/command.txt
done

# 23. Fifteenth session: the cells the fourteenth left, with inner momentum 0.3 (48k / 1000, 96k / 100, the trainer's
#     batch shape at 48k, the short fine-tunes), the matched-seeds table with every cell, and how the 20k seeds part
#     over the run (reads probes26_20k's runs, section 22).
for dir in probes27_100k probes27_50k_1000 probes27_50k_16x128 short_finetune_b03 matched_seeds_b03b \
           seed_spread_20k_b03; do
    bash benchmarks/results/$dir/command.txt
done
# The probes of a later switch to inner momentum 0.5 apply a patch to a copy of src/ (their command.txt says how).
bash benchmarks/results/probe_b1switch_100k/command.txt
bash benchmarks/results/probe_b1switch300_100k/command.txt

# 24. Sixteenth session: seven settings around the default over the first fifth of the 20k run (1962 steps, 16 seeds
#     each; the phase that sets the seeds' order at 1000 tokens per parameter), and polyak_beta 0.99 (the lead): 6.6k
#     and 20k to 1000 tokens per parameter (16 seeds), 48k to 100 (4), 96k to 100 (2), the suite, the quickstart and
#     the 10M GPT. The default is unchanged.
python -m sfplus_lab.robust --out benchmarks/results/robust_pb099 --configs default-pb0.99 --no-adamw
for dir in screen_20k_200tpp probes28_20k probes28_6k probes28_50k_100 probes28_100k matched_seeds_pb099 \
           quickstart_pb099 m10_pb099b; do
    bash benchmarks/results/$dir/command.txt
done

# 25. Seventeenth session: polyak_beta 0.99 on the 10M GPT with a second seed (600 steps, then continued to 1500),
#     AdamW with cosine decay on the 10M GPT (four learning rates, seed 0), and
#     two memories of ||g||_1 that are not library options (a patch to a copy of src/, their command.txt says how):
#     one growing with the steps, one asymmetric, over the first fifth of the 20k run (16 seeds) and on the 10M GPT.
#     The default is unchanged.
for dir in m10_l1_memory m10_adamw_cosine screen_20k_l1_ramp screen_20k_l1_asym; do
    bash benchmarks/results/$dir/command.txt
done

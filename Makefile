# mpwatch: the two commands of the quick start are `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# torch's CPU wheel first, so the dependency resolver never pulls the CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test lint bench evaluate cnn clean install install-dev system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Debian packages the tests use (a real Prometheus, headless Chromium); a no-op when present.
system-deps:
	bash scripts/install-system-deps.sh

run: $(VENV)/.installed
	$(BIN)/mpwatch run --config config.yaml --seed-demo

test: $(VENV)/.installed-dev system-deps
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check engine daemon tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.run --out artifacts/bench

# The CNN members shipped beside the bundled libraries (engine/data/*/cnn.onnx), trained as the
# daemon's challenger trains them; their held-out reports go to artifacts/cnn/.
cnn: $(VENV)/.installed
	for lib in default_library default_raman_library; do \
	    $(BIN)/python -m daemon.growth.challenger --library engine/data/$$lib \
	        --out engine/data/$$lib/cnn.onnx --report artifacts/cnn/$$lib.json || exit 1; \
	done

# The evaluation numbers quoted in the README.
evaluate: $(VENV)/.installed
	$(BIN)/mpwatch evaluate --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --library ../shared/data/openspecy_ftir_2023 --test "../shared/data/flopp_frond2021@library=FLOPP-e" \
	    --loco --lofo --out artifacts/evaluate/canonical
	$(BIN)/mpwatch evaluate --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --library ../shared/data/openspecy_ftir_2023 --test "../shared/data/flopp_frond2021@library=FLOPP-e" \
	    --members served,subknn,cnn --lofo --out artifacts/evaluate/cnn
	$(BIN)/mpwatch evaluate --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --test "../shared/data/flopp_frond2021@library=FLOPP-e" --members served --lofo \
	    --out artifacts/evaluate/flopp_only_served
	$(BIN)/mpwatch evaluate --library ../shared/data/openspecy_ftir_2023 \
	    --test "../shared/data/flopp_frond2021@library=FLOPP-e" --members served --lofo \
	    --out artifacts/evaluate/openspecy_to_flopp_e_served
	$(BIN)/mpwatch evaluate --library ../shared/data/openspecy_ftir_2023 \
	    --test ../shared/data/villegas_camacho2024_c8 --members served --lofo \
	    --out artifacts/evaluate/openspecy_to_villegas_served
	$(BIN)/mpwatch evaluate --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --test ../shared/data/villegas_camacho2024_c8 --members served --lofo \
	    --out artifacts/evaluate/flopp_to_villegas_served
	$(BIN)/mpwatch evaluate --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --test "../shared/data/flopp_frond2021@library=FLOPP-e" --loco --lofo --out artifacts/evaluate/flopp_only
	$(BIN)/mpwatch evaluate --library ../shared/data/openspecy_ftir_2023 \
	    --test "../shared/data/flopp_frond2021@library=FLOPP-e" --lofo --out artifacts/evaluate/openspecy_to_flopp_e
	$(BIN)/mpwatch evaluate --library ../shared/data/openspecy_ftir_2023 \
	    --test ../shared/data/villegas_camacho2024_c8 --lofo --out artifacts/evaluate/openspecy_to_villegas
	$(BIN)/mpwatch evaluate --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --test ../shared/data/villegas_camacho2024_c8 --lofo --out artifacts/evaluate/flopp_to_villegas
	$(BIN)/mpwatch evaluate --study ../shared/data/flopp_frond2021 --out artifacts/evaluate/study
	$(BIN)/mpwatch evaluate --conventions --test ../shared/data/flopp_frond2021 \
	    --test ../shared/data/villegas_camacho2024_c8 --out artifacts/evaluate/conventions
	$(BIN)/mpwatch evaluate --conventions --library "../shared/data/flopp_frond2021@library=FLOPP" \
	    --test "../shared/data/flopp_frond2021@library=FLOPP-e" --out artifacts/evaluate/conventions_flopp
	$(BIN)/mpwatch evaluate --library "../shared/data/openspecy_raman_polymers_2023@organization=Cabernard et al. 2018" \
	    --test "../shared/data/openspecy_raman_polymers_2023@organization!=Cabernard et al. 2018" \
	    --lofo --out artifacts/evaluate/raman_cabernard_to_others
	$(BIN)/mpwatch evaluate --library "../shared/data/openspecy_raman_polymers_2023@organization!=Cabernard et al. 2018" \
	    --test "../shared/data/openspecy_raman_polymers_2023@organization=Cabernard et al. 2018" \
	    --lofo --out artifacts/evaluate/raman_others_to_cabernard

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts

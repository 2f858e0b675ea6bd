"""`python -m transfer_lightning ...`: train one experiment (or a sweep with -m)."""

from transfer_lightning.train import main

if __name__ == "__main__":
    main()

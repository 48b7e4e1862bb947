"""``python -m vitdense``: the LightningCLI entry point."""

from vitdense.cli.entry import main

if __name__ == "__main__":
    main()

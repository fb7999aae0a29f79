"""The command line's help formatter, shared by ``nuker-mge`` and the emulator's ``train``
sub-command (a module of its own so that neither imports the other)."""

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in every option's help, except where there is nothing to show (None, flags, required)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.required \
                or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)

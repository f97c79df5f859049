"""google.colab.output stand-in: the custom widget manager switch."""
from google.colab._log import log

custom_widget_manager = False


def enable_custom_widget_manager():
    global custom_widget_manager
    custom_widget_manager = True
    log("output.enable_custom_widget_manager")

"""Stylize one photo by pixel optimisation (Gatys et al. 2016), the quality reference:

    python optimize.py content=photo.jpg style=starry_night steps=300 output=out.png

See stylenet/training/optimize.py and stylenet/configs/optimize.yaml.
"""

from stylenet.training.optimize import main

if __name__ == "__main__":
    main()
